"""A slot nobody claimed before a later one finished (a worker whose clock is ahead took the job past it) ends as
a ``missed`` row that says so, never as no row at all; a slot that did run keeps its row. The runner of a
worker built as the process builds it, against real redis-server and PostgreSQL, on a stepped clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.runtime.clients import make_pool
from appliance.kernel.runtime.clock import SteppedClock
from appliance.worker.claim import PASSED_OVER, epoch_ms
from appliance.worker.dispatch import Dispatch
from appliance.worker.main import build
from tests.worker.harness import write_jobs_file

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


def _slot(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


@pytest.fixture
def worker(tmp_path, app_env, redis_server):
    jobs = write_jobs_file(tmp_path / "jobs.toml", {"tick": {"callable": "tests.worker.sample_jobs:tick",
                                                             "schedule": "1s"}})
    config = load_settings({**app_env, "APPLIANCE_JOBS_FILE": str(jobs), "JOBS_ENABLED": "tick"}, env_file=None)
    pool = make_pool(config, autocommit=True)
    pool.open(wait=True)
    worker = build(config, redis_server.client(), db=None, clock=SteppedClock(_slot(0)), ledger=Ledger(pool)).worker
    yield worker
    pool.close()


def _ran(ledger: Ledger, i: int) -> None:
    ledger.start("tick", _slot(i), "schedule", f"r{i}", "owner", "ahead", 1, _slot(i))
    ledger.finish(f"r{i}", Outcome.SUCCESS, Outcome.SUCCESS, None, 0, None, 1.0, None)


def test_slots_passed_over_by_a_clock_ahead_get_a_row_and_slots_that_ran_keep_theirs(worker, redis_server,
                                                                                     app_env):
    runner, job = worker.runner, worker.jobs["tick"]
    assert runner.ledger is not None
    _ran(runner.ledger, 3)
    _ran(runner.ledger, 5)  # a worker whose clock is ahead ran slot 5 before this one reached slot 2
    redis_server.client().hset(keys.slot("tick"), "done", epoch_ms(_slot(5)))
    assert [runner.execute(Dispatch(job, _slot(i))).claim for i in (2, 3)] == [Claim.PASSED, Claim.PASSED]
    assert runner.execute(Dispatch(job, _slot(4), attempt=2)).claim is Claim.PASSED  # a retry: as before
    # Redis lost its marker: PostgreSQL's done slot answers instead, with the same account.
    redis_server.client().delete(keys.slot("tick"))
    assert runner.execute(Dispatch(job, _slot(1))).claim is Claim.DONE
    assert runner.recorder.stop(5)
    with psycopg.connect(app_env["DATABASE_URL"]) as conn:
        rows = dict(conn.execute("SELECT extract(epoch FROM slot - %s)::int, (outcome, reason) FROM job_slots",
                                 (T0,)).fetchall())
    assert rows == {1: ("missed", PASSED_OVER), 2: ("missed", PASSED_OVER), 3: ("success", None),
                    4: ("failed", "retry not run: an earlier run held the job"), 5: ("success", None)}, rows
