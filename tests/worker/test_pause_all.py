"""Pause-all and resume-all (seed 002's scheduler stop and start) through the CLI against a real worker, its
Redis and the slot ledger in PostgreSQL: persisted across a worker restart, every slot of the pause recorded
``paused``, audited, and no burst of the paused slots on resume."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import psycopg
import pytest

from tests.services import wait_until
from tests.worker.harness import WorkerProcess, records, worker_env, write_jobs_file

pytestmark = pytest.mark.process

JOBS = {"tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"},
        "tock": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"}}


def slots(url: str, job: str) -> list[tuple[datetime, str, str]]:
    """The ledger's slots of ``job``, oldest first: (slot, outcome, worker)."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT slot, outcome, worker FROM job_slots WHERE job = %s ORDER BY slot",
                            (job,)).fetchall()


def ran(client, job: str) -> list[datetime]:
    """The slots the job's body finished, as it recorded them itself."""
    return [datetime.fromisoformat(r["slot"]) for r in records(client, job) if r["event"] == "end"]


def test_pause_all_is_persisted_recorded_audited_and_resume_does_not_burst(tmp_path, app_env, redis_server):
    """Read from the ledger, not counted in a time window: the restarted worker records slots ``paused``;
    after resume-all the next slot runs and no paused slot is run late; a job paused on its own stays so."""
    client = redis_server.client()
    url = app_env["DATABASE_URL"]
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", JOBS), list(JOBS))

    def cli(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def paused(job: str, worker: WorkerProcess | None = None) -> list[datetime]:
        by = f":{worker.pid}" if worker else ""
        return [s for s, o, w in slots(url, job) if o == "paused" and (w or "").endswith(by)]

    worker = WorkerProcess(env, tmp_path / "worker-1.log")
    try:
        worker.wait_for_log("worker started")
        wait_until(lambda: ran(client, "tick") and ran(client, "tock"), 10, "first runs")
        cli("jobs", "pause", "tock")  # a job paused on its own stays paused after resume --all
        assert json.loads(cli("jobs", "pause", "--all", "--json"))["paused_all"] is True
        assert "ALL JOBS PAUSED by cli:" in cli("jobs", "list")
        first = wait_until(lambda: paused("tick"), 10, "a slot recorded paused")[0]
        worker.terminate()
        worker = WorkerProcess(env, tmp_path / "worker-2.log")
        worker.wait_for_log("worker started")
        restarted = wait_until(lambda: (p := paused("tick", worker)) and len(p) >= 2 and p, 10,
                               "the restarted worker's slots recorded paused")[0]
        cli("jobs", "resume", "--all")
        before = paused("tick")
        after = wait_until(lambda: [s for s, o, _ in slots(url, "tick") if o == "success" and s > before[-1]], 10,
                           "a slot run after resume")[0]
        tick = {s: o for s, o, _ in slots(url, "tick")}
        assert [s for s in before if tick[s] != "paused"] == [], "a paused slot was run after resume"
        assert [s for s in ran(client, "tick") if first <= s < after] == [], "a run during the pause"
        assert {o for s, o in tick.items() if first <= s < after} <= {"paused", "missed"}, tick
        # "missed": slots of the restart itself, older than their grace when the new worker came up
        assert [s for s, o in tick.items() if o == "missed" and s >= restarted] == [], tick
        wait_until(lambda: [s for s in paused("tock") if s >= after], 10, "tock's slot after resume-all, paused")
        assert [s for s in ran(client, "tock") if s >= first] == [], "tock keeps its own pause"
        audit = [json.loads(entry)["action"] for entry in client.zrange("appliance:audit", 0, -1)]
        assert audit == ["job.pause", "scheduler.pause-all", "scheduler.resume-all"], audit
    finally:
        worker.terminate()
