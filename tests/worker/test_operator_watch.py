"""What workers do by themselves for the operator (issue 22): a pause with no end that outlives
``PAUSE_ALERT_AFTER`` raises a warning alert once, and an info message when it ends; a job whose spec changed
between two starts is one audit-log row with the spec before and after."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.services import wait_until
from tests.worker.harness import WorkerProcess, worker_env, write_jobs_file

pytestmark = pytest.mark.process


def _alerts(worker: WorkerProcess, state: str) -> list[dict]:
    return [line for line in worker.log_lines() if line.get("alert") == state and line.get("condition") == "pause:tick"]


def test_a_pause_without_an_end_warns_once_past_pause_alert_after_and_its_spec_changes_are_audited(tmp_path, app_env):
    jobs = {"tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s", "lock_ttl": 1}}
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", jobs), ["tick"], PAUSE_ALERT_AFTER="1")

    def cli(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    worker = WorkerProcess(env, tmp_path / "worker-1.log")
    try:
        worker.wait_for_log("worker started")
        cli("jobs", "pause", "tick", "--reason", "left on")
        # Looked at every refresh (10 s at most): one warning, however many refreshes follow.
        (warning,) = wait_until(lambda: _alerts(worker, "warning"), 25, "the warning", interval=0.2)
        assert warning["severity"] == "warning" and "paused for" in warning["msg"] and "left on" in warning["msg"]
        cli("jobs", "pause", "tick", "--reason", "still left on")  # a new pause, still without an end
        cli("jobs", "resume", "tick")
        wait_until(lambda: _alerts(worker, "resolved"), 15, "the info message", interval=0.2)
        assert len(_alerts(worker, "warning")) == 1
    finally:
        worker.terminate()

    specs = [r for r in json.loads(cli("audit-log", "--json")) if r["action"] == "job.spec"]
    assert [(r["target"], r["before"]) for r in specs] == [("tick", None)]
    write_jobs_file(tmp_path / "jobs.toml", {"tick": {**jobs["tick"], "schedule": "2s"}})
    for n in (2, 3):  # a changed spec is audited once; the same spec again is not
        worker = WorkerProcess(env, tmp_path / f"worker-{n}.log")
        worker.wait_for_log("worker started")
        worker.terminate()
    specs = [r for r in json.loads(cli("audit-log", "--json")) if r["action"] == "job.spec"]
    assert len(specs) == 2 and specs[0]["actor"].startswith("worker:")
    assert (specs[0]["before"]["schedule"], specs[0]["after"]["schedule"]) == ("1s", "2s")
