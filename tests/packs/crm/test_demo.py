"""``appliance seed-demo`` is idempotent, and after it every job of the pack has real work to do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from appliance.kernel.protocol.state import ClusterState
from appliance.packs.crm.demo import TRIGGERED
from appliance.packs.crm.jobs import calls, campaigns, cleanup, reminders, trials
from tests.services import wait_until
from tests.worker.harness import REPO, WorkerProcess, worker_env, write_jobs_file

TABLES = ("tenants", "agents", "leads", "campaigns", "campaign_recipients", "calls", "activity")


def seed(app_env) -> dict:
    result = subprocess.run([sys.executable, "-m", "appliance", "seed-demo", "--json"], cwd=REPO, env=app_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def counts(sql) -> dict[str, int]:
    return {table: sql(f"SELECT count(*) FROM {table}")[0][0] for table in TABLES}


@pytest.mark.process
def test_seed_demo_twice_adds_nothing_the_second_time_and_every_job_then_works(app_env, make_ctx, sql):
    first = seed(app_env)
    assert len(first["created"]) == 3 and first["existing"] == []
    before = counts(sql)
    assert min(before.values()) > 0
    second = seed(app_env)
    assert second["created"] == [] and len(second["existing"]) == 3
    assert counts(sql) == before
    done = {}
    for name, job in (("campaign-scheduler", campaigns.run), ("lead-reminder-scheduler", reminders.run),
                      ("call-scheduler", calls.run), ("trial-expiration", trials.run), ("call-cleanup", cleanup.run)):
        ctx = make_ctx(name, CAMPAIGN_BATCH_DELAY="0")
        job(ctx)
        done[name] = ctx.processed_count
    assert all(done.values()), done
    assert sql("SELECT count(*) FROM campaign_recipients WHERE status = 'failed'") == [(4,)], "the typos"
    assert sql("SELECT count(*) FROM campaigns WHERE status = 'completed'") == [(2,)]
    assert sql("SELECT status FROM tenants WHERE plan = 'trial'") == [("suspended",)]


@pytest.mark.process
def test_seed_demo_trigger_makes_a_running_worker_do_the_hourly_and_daily_jobs_now(tmp_path, app_env, sql,
                                                                                   redis_server):
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", {}), list(TRIGGERED), LOG_LEVEL="debug")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    state = ClusterState(redis_server.client())
    try:
        worker.wait_for_log("worker started", 20)
        wait_until(lambda: set(TRIGGERED) <= set(state.jobs.names()), 20, "the worker to publish its jobs")
        result = subprocess.run([sys.executable, "-m", "appliance", "seed-demo", "--trigger", "--json"], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["triggered"] == list(TRIGGERED)
        try:
            wait_until(lambda: sql("SELECT count(DISTINCT job) FROM job_runs WHERE processed > 0 AND job = ANY(%s)",
                                   (list(TRIGGERED),)) == [(3,)], 30, "each triggered job to do work")
        except TimeoutError as exc:
            runs = sql("SELECT job, outcome, processed, error FROM job_runs")
            raise AssertionError(f"{exc}; job_runs: {runs}; log:\n{worker.log_path.read_text()[-4000:]}") from None
    finally:
        worker.terminate()
        state.client.close()
    assert sql("SELECT status FROM tenants WHERE plan = 'trial'") == [("suspended",)]
    assert sql("SELECT count(*) FROM reminders WHERE status = 'sent'")[0][0] > 0
    assert sql("SELECT count(*) FROM calls WHERE finished_at < now() - interval '100 days'") == [(0,)]
