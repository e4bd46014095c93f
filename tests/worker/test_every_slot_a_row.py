"""Every slot ends with a ledger row, also in cases the chaos run (``scripts/chaos``) found without one: the retry
of a slot claimed after a later slot had already run, and a run the worker itself could not carry out (an error
outside the job, such as a failing system call). Real redis-server and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.runtime.clients import make_pool
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
    worker = build(config, redis_server.client(), db=None, ledger=Ledger(pool)).worker
    yield worker.runner.claims, worker.jobs["tick"], worker
    pool.close()


def _row(url: str, slot: datetime) -> tuple | None:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT outcome, reason FROM job_slots WHERE job = 'tick' AND slot = %s",
                            (slot,)).fetchone()


def _flush(claims) -> None:
    claims.recorder.start()
    assert claims.recorder.stop(10)


def test_a_retry_that_finds_a_later_slot_done_ends_its_slot_failed(claims, app_env):
    """Redis lost its markers; PostgreSQL's fence row says a later slot is done: the retry is not run, and its
    slot, whose first attempt failed, ends failed (slots passed over on a first attempt: test_passed_over)."""
    claims_, job, _ = claims
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO job_fences (job, fence, done_slot) VALUES ('tick', 1, %s) "
                     "ON CONFLICT (job) DO UPDATE SET done_slot = EXCLUDED.done_slot", (LATER,))
    attempt = claims_.take(Dispatch(job, SLOT, attempt=2))
    assert attempt.claim is Claim.DONE
    _flush(claims_)
    assert _row(app_env["DATABASE_URL"], SLOT) == ("failed", "retry not run: a later slot ran first")


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
