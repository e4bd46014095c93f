"""Misfires: after downtime the newest missed slot runs once if within grace; otherwise it is counted missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.protocol import keys
from appliance.kernel.runtime.clock import SteppedClock
from appliance.worker.claim import epoch_ms
from appliance.worker.main import build
from appliance.worker.slotjob import SlotJob
from tests.worker.harness import write_jobs_file

NOW = datetime(2026, 3, 1, 10, 0, 10, tzinfo=UTC)
LATEST = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def plan(tmp_path, app_env, redis_server):
    def make(done: datetime | None, grace: float | None = None) -> tuple[datetime, dict[str, str]]:
        table: dict[str, object] = {"callable": "tests.worker.sample_jobs:tick", "schedule": "1m"}
        if grace is not None:
            table["grace"] = grace
        env = {**app_env, "APPLIANCE_JOBS_FILE": str(write_jobs_file(tmp_path / "j.toml", {"minutely": table})),
               "JOBS_ENABLED": "minutely"}
        client = redis_server.client()
        if done is not None:
            client.hset(keys.slot("minutely"), "done", epoch_ms(done))
        worker = build(load_settings(env, env_file=None), client, db=None, clock=SteppedClock(NOW)).worker
        worker.plan()
        (job,) = worker.scheduler.jobs
        return cast(SlotJob, job).slot, client.hgetall(keys.COUNTS)

    return make


def test_missed_slot_within_grace_runs_at_start(plan):
    first, counts = plan(done=LATEST - timedelta(minutes=1))
    assert first == LATEST
    assert "minutely:missed" not in counts


def test_missed_slot_beyond_grace_is_counted_and_skipped(plan):
    first, counts = plan(done=LATEST - timedelta(minutes=1), grace=5)
    assert first == LATEST + timedelta(minutes=1)
    assert counts["minutely:missed"] == "1"


def test_nothing_missed_when_the_last_slot_finished(plan):
    first, counts = plan(done=LATEST)
    assert first == LATEST + timedelta(minutes=1)
    assert counts == {}
