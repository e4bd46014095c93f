"""Every slot ends with a ledger row, also in the two cases the chaos run (``scripts/chaos``) found without one:
a slot claimed late, after a later slot of its job had already run (its claim held up by a Redis blip, a pause,
a slow start), which is not run after it; and a run the worker itself could not carry out (an error outside the
job, such as a failing system call). Real redis-server and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from appliance.kernel import keys
from appliance.kernel.clients import make_pool
from appliance.kernel.ledger import Ledger
from appliance.kernel.locks import Claim
from appliance.kernel.outcomes import Outcome
from appliance.kernel.packs import load_settings
from appliance.worker.claim import epoch_ms
from appliance.worker.dispatch import Dispatch
from appliance.worker.main import build
from tests.worker.harness import write_jobs_file

SLOT = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
LATER = SLOT + timedelta(seconds=10)


@pytest.fixture
def claims(tmp_path, app_env, redis_server):
    table = {"callable": "tests.worker.sample_jobs:tick", "schedule": "10s"}
    env = {**app_env, "APPLIANCE_JOBS_FILE": str(write_jobs_file(tmp_path / "j.toml", {"tick": table})),
           "JOBS_ENABLED": "tick"}
    config = load_settings(env, env_file=None)
    pool = make_pool(config, autocommit=True)
    pool.open(wait=True)
    worker, _ = build(config, redis_server.client(), db=None, ledger=Ledger(pool))
    yield worker.runner.claims, worker.jobs["tick"], worker
    pool.close()


def _row(url: str, slot: datetime) -> tuple | None:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT outcome, reason FROM job_slots WHERE job = 'tick' AND slot = %s",
                            (slot,)).fetchone()


def _flush(claims) -> None:
    claims.recorder.start()
    assert claims.recorder.stop(10)


def test_redis_knows_a_later_slot_ran(claims, redis_server, app_env):
    claims_, job, _ = claims
    redis_server.client().hset(keys.slot("tick"), "done", epoch_ms(LATER))
    attempt = claims_.take(Dispatch(job, SLOT))
    assert attempt.claim is Claim.DONE
    _flush(claims_)
    assert _row(app_env["DATABASE_URL"], SLOT) == ("coalesced", "a later slot ran first; not run after it")


def test_only_postgresql_knows_a_later_slot_ran(claims, app_env):
    """Redis lost its markers (restarted empty); the fence row says a later slot is done."""
    claims_, job, _ = claims
    ledger = claims_.ledger
    assert not ledger.start("tick", LATER, "schedule", "r-later", "owner", "w", 1, LATER).done
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("UPDATE job_fences SET done_slot = %s WHERE job = 'tick'", (LATER,))
    attempt = claims_.take(Dispatch(job, SLOT))
    assert attempt.claim is Claim.DONE
    _flush(claims_)
    assert _row(app_env["DATABASE_URL"], SLOT) == ("coalesced", "a later slot ran first; not run after it")


def test_the_slots_own_success_is_not_overwritten(claims, redis_server, app_env):
    claims_, job, _ = claims
    ledger = claims_.ledger
    ledger.start("tick", SLOT, "schedule", "r1", "owner", "w", 1, SLOT)
    ledger.finish("r1", Outcome.SUCCESS, Outcome.SUCCESS, None, 0, None, 1.0, None)
    redis_server.client().hset(keys.slot("tick"), "done", epoch_ms(LATER))
    claims_.take(Dispatch(job, SLOT))
    _flush(claims_)
    assert _row(app_env["DATABASE_URL"], SLOT)[0] == "success"


def test_a_run_the_worker_could_not_carry_out_still_ends_its_slot(claims, app_env):
    """The runner raising (here: told to, standing in for a system call that fails under the runner) must not
    leave the slot without a row, nor the job marked running on this worker."""
    claims_, job, worker = claims

    def broken(d):
        raise OSError(22, "Invalid argument")

    worker.runner.execute = broken
    worker._dispatch(Dispatch(job, SLOT))
    worker.pool.wait_idle(5)
    _flush(claims_)
    outcome, reason = _row(app_env["DATABASE_URL"], SLOT)
    assert outcome == "failed" and "OSError" in reason and "Invalid argument" in reason
    assert worker.running_jobs() == []
