"""What operators read from a running worker: run logs, the job table, history (Redis and PostgreSQL) and
heartbeats, with no secret anywhere. One real worker process against real redis-server and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import psycopg
import pytest

from tests.services import wait_until
from tests.worker.harness import WorkerProcess, worker_env, write_jobs_file

pytestmark = pytest.mark.process

#: The database password is the test cluster's real, generated one (it must work), the others are canaries.
CANARIES = ["", "canary-admin-token-4410", "canary-hook-token-9902"]
JOBS = {
    "tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"},
    "flaky": {"callable": "tests.worker.sample_jobs:flaky", "schedule": "1s", "max_retries": 0},
}


@pytest.fixture
def running(tmp_path, app_env, postgres_server):
    """A worker whose database URL, admin token and webhook URL carry canary secrets."""
    CANARIES[0] = (postgres_server.dir / "password").read_text().strip()
    env = worker_env(
        {**app_env, "DATABASE_URL": f"{app_env['DATABASE_URL']}&password={CANARIES[0]}"},
        write_jobs_file(tmp_path / "jobs.toml", JOBS), list(JOBS),
        ADMIN_TOKEN=CANARIES[1], ALERT_WEBHOOK_URL=f"http://127.0.0.1:9/hook?token={CANARIES[2]}",
        ALERT_CRITICAL_THRESHOLD="1000",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.wait_for_log("worker started")
    yield worker, env
    worker.terminate()


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_each_run_logs_start_and_end_with_job_slot_duration_outcome_and_owner(running):
    worker, _ = running
    wait_until(lambda: sum(1 for line in worker.log_lines() if line.get("msg") == "run ended") >= 4, 15, "runs")
    lines = worker.log_lines()
    started = {(line["job"], line["slot"]): line for line in lines if line.get("msg") == "run started"}
    ended = [line for line in lines if line.get("msg") == "run ended"]
    outcomes = {line["job"]: line["outcome"] for line in ended}
    assert outcomes == {"tick": "success", "flaky": "failure"}
    for end in ended:
        start = started[(end["job"], end["slot"])]
        assert end["owner"] == start["owner"] and "pid=" in end["owner"]
        assert datetime.fromisoformat(end["slot"]).microsecond == 0
        assert isinstance(end["duration_ms"], (int, float)) and end["duration_ms"] >= 0
        assert {"level", "ts", "logger", "process"} <= set(end)
    assert any("flaky job failed on purpose" in (line.get("error") or "") for line in ended)


def test_job_table_history_and_heartbeats_are_readable_by_the_cli(running, migrated_db):
    _worker, env = running
    wait_until(lambda: len(json.loads(_cli(env, "jobs", "history", "tick", "--json"))) >= 2, 15, "history")
    jobs = {job["name"]: job for job in json.loads(_cli(env, "jobs", "list", "--json"))}
    assert set(jobs) == {"tick", "flaky"}
    tick = jobs["tick"]
    assert tick["schedule"] == "1s" and len(tick["next_runs"]) >= 1 and tick["paused"] is False
    assert tick["last_run"]["outcome"] == "success" and tick["last_success"]
    history = json.loads(_cli(env, "jobs", "history", "tick", "--json"))
    newest = next(run for run in history if run["finished"])  # the newest may still be running
    assert {"started", "finished", "outcome", "duration_ms", "worker", "error", "slot"} <= set(newest)
    assert newest["worker"] == tick["last_run"]["worker"]
    assert newest["summary"] == {"slept": 0.2}, "what the job returned is stored with its run"
    # Like tick, flaky runs every second: its newest run may still be running.
    failed = wait_until(lambda: [run for run in json.loads(_cli(env, "jobs", "history", "flaky", "--json"))
                                 if run["finished"]], 15, "a finished run of flaky", interval=0.5)[0]
    assert failed["outcome"] == "failure" and "flaky job failed on purpose" in failed["error"]
    with psycopg.connect(migrated_db) as conn:
        rows = dict(conn.execute("SELECT job, count(*) FROM job_runs GROUP BY job").fetchall())
        outcome = conn.execute("SELECT outcome, error FROM job_runs WHERE job = 'flaky' AND finished_at IS NOT NULL "
                               "ORDER BY id LIMIT 1").fetchone()
        summary = conn.execute("SELECT summary FROM job_runs WHERE job = 'tick' LIMIT 1").fetchone()[0]
    assert rows.get("tick", 0) >= 2 and rows.get("flaky", 0) >= 1
    assert outcome[0] == "failure" and "failed on purpose" in outcome[1]
    assert summary == {"slept": 0.2}


def test_no_secret_reaches_logs_or_cli_output(running):
    worker, env = running
    wait_until(lambda: any(line.get("msg") == "run ended" for line in worker.log_lines()), 15, "a run")
    outputs = [worker.log_path.read_text(), _cli(env, "check-config", "--json"), _cli(env, "jobs", "list", "--json"),
               _cli(env, "jobs", "history", "--json"), _cli(env, "locks", "list", "--json")]
    for text in outputs:
        for canary in CANARIES:
            assert canary not in text
    assert "password=***" in outputs[1] or "***" in outputs[1]
