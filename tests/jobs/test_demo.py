"""``appliance seed-demo`` is idempotent, and after it every job of the pack has real work to do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from appliance.jobs import calls, campaigns, cleanup, reminders, trials
from tests.worker.harness import REPO

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
