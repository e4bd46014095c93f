"""Pause-all and resume-all (seed 002's scheduler stop and start) through the CLI against a real worker, its
Redis and the slot ledger in PostgreSQL: persisted across a worker restart, every slot of the pause recorded
``paused``, audited, and no burst of the paused slots on resume."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest

from tests.services import wait_until
from tests.worker.harness import WorkerProcess, records, worker_env, write_jobs_file

pytestmark = pytest.mark.process

JOBS = {"tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"},
        "tock": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"}}


def slot_outcomes(url: str, job: str, since: float) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT outcome FROM job_slots WHERE job = %s AND slot >= to_timestamp(%s) "
                            "ORDER BY slot", (job, since)).fetchall()
    return [outcome for (outcome,) in rows]


def ends(client, job: str, since: float) -> list[float]:
    return [r["t"] for r in records(client, job) if r["event"] == "end" and r["t"] >= since]


def test_pause_all_is_persisted_recorded_audited_and_resume_does_not_burst(tmp_path, app_env, redis_server):
    client = redis_server.client()
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", JOBS), list(JOBS))

    def cli(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    worker = WorkerProcess(env, tmp_path / "worker-1.log")
    try:
        worker.wait_for_log("worker started")
        wait_until(lambda: ends(client, "tick", 0) and ends(client, "tock", 0), 10, "first runs")
        cli("jobs", "pause", "tock")  # a job paused on its own stays paused after resume --all
        assert json.loads(cli("jobs", "pause", "--all", "--json"))["paused_all"] is True
        assert "ALL JOBS PAUSED by cli:" in cli("jobs", "list")
        time.sleep(0.5)  # a run already started may finish
        paused_at = time.time()
        worker.terminate()
        worker = WorkerProcess(env, tmp_path / "worker-2.log")
        worker.wait_for_log("worker started")
        time.sleep(3)
        assert ends(client, "tick", paused_at) == [], "the pause outlived the worker's restart"
        resumed_at = time.time()
        cli("jobs", "resume", "--all")
        wait_until(lambda: ends(client, "tick", resumed_at), 5, "a run after resume")
        time.sleep(2)
        after = ends(client, "tick", resumed_at)
        assert 1 <= len(after) <= 3, f"one run per slot after resume, not a burst of the paused ones: {after}"
        assert ends(client, "tock", paused_at) == [], "tock keeps its own pause"
        tick = slot_outcomes(app_env["DATABASE_URL"], "tick", paused_at + 1)
        paused = [o for o in tick if o == "paused"]
        assert len(paused) >= 2 and "missed" not in tick, tick
        assert tick[-1] == "success" and set(tick) <= {"paused", "success"}, tick
        audit = [json.loads(entry)["action"] for entry in client.zrange("appliance:audit", 0, -1)]
        assert audit == ["job.pause", "scheduler.pause-all", "scheduler.resume-all"], audit
    finally:
        worker.terminate()
