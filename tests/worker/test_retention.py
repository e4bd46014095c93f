"""Ledger retention (issue 22, point 5) applied by a real worker: old runs deleted beyond ``keep_runs`` and
``keep_days``, failed runs kept for ``keep_failed_days``, old slot rows summarised rather than lost, and
``appliance audit`` still proving the window (and catching a summary that went missing)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.services import wait_until
from tests.worker.harness import WorkerProcess, worker_env, write_jobs_file

pytestmark = pytest.mark.process

KEEP_SECONDS = 4.0
JOBS = {"tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s", "lock_ttl": 1, "keep_runs": 3,
                 "keep_days": KEEP_SECONDS / 86400},
        "flaky": {"callable": "tests.worker.sample_jobs:flaky", "schedule": "1s", "lock_ttl": 1, "max_retries": 0,
                  "keep_runs": 1, "keep_days": KEEP_SECONDS / 86400}}


def sql(url: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def test_old_history_is_pruned_and_summarised_and_the_audit_still_proves_it(tmp_path, app_env):
    url = app_env["DATABASE_URL"]
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", JOBS), list(JOBS), RETENTION_INTERVAL="1",
                     ALERT_ENABLED="false")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_for_log("worker started")
        started = datetime.now(UTC)
        wait_until(lambda: (sql(url, "SELECT sum(slots) FROM job_slot_summaries WHERE job = 'tick'")[0][0] or 0) >= 5,
                   20, "tick's old slot rows summarised", interval=0.2)
        time.sleep(2)
        now = sql(url, "SELECT now()")[0][0]
        cutoff = now - timedelta(seconds=KEEP_SECONDS + 2.5)  # the keep, plus one pass and a run's length
        old_runs = sql(url, "SELECT count(*) FROM job_runs WHERE job = 'tick' AND started_at < %s", (cutoff,))
        assert old_runs == [(0,)], "tick's old runs not deleted"
        assert sql(url, "SELECT count(*) FROM job_slots WHERE job = 'tick' AND slot < %s", (cutoff,)) == [(0,)]
        # Failed runs and their slots stay for keep_failed_days (90 days by default).
        flaky = sql(url, "SELECT count(*), min(started_at) FROM job_runs WHERE job = 'flaky'")[0]
        assert flaky[0] >= 5 and flaky[1] < cutoff, flaky
        assert sql(url, "SELECT count(*) FROM job_slot_summaries WHERE job = 'flaky'") == [(0,)]
        assert sql(url, "SELECT count(*) FROM job_runs WHERE job = 'tick'")[0][0] <= KEEP_SECONDS + 5
    finally:
        worker.terminate()

    def audit() -> tuple[int, dict]:
        result = subprocess.run([sys.executable, "-m", "appliance", "audit", "--since",
                                 (started - timedelta(seconds=5)).isoformat(), "--json"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode in (0, 1), result.stderr
        return result.returncode, json.loads(result.stdout)

    code, report = audit()
    assert code == 0, report["violations"]
    tick = report["jobs"]["tick"]
    summarised = sql(url, "SELECT sum(slots) FROM job_slot_summaries WHERE job = 'tick'")[0][0]
    assert tick["recorded"] == tick["expected"] and tick["outcomes"]["success"] >= summarised
    # A summary that goes missing is a gap the audit sees, as a missing row is.
    sql(url, "UPDATE job_slot_summaries SET slots = slots - 1 WHERE job = 'tick' AND outcome = 'success'")
    code, report = audit()
    assert code == 1 and [v["kind"] for v in report["violations"]] == ["unrecorded"], report["violations"]
    assert "slots expected" in report["violations"][0]["detail"]
