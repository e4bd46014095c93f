"""A herd: many jobs due on one instant, claimed together (one acquire, one ledger statement) and ended in flights
(``appliance.worker.herd``, ``appliance.worker.ends``). Every slot still runs once with one ledger row, and the
batched paths keep the fences: a run whose lease was taken over mid-herd does not commit. Real redis-server and
PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.protocol.ledger_batches import Ending
from appliance.kernel.protocol.locks import End
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.workers import Beat
from appliance.kernel.runtime.clients import make_pool
from appliance.worker import loop as worker_loop
from appliance.worker.claim import OpenRun
from appliance.worker.dispatch import Dispatch
from appliance.worker.herd import take_herd
from appliance.worker.main import build
from appliance.worker.shares import Shares
from tests.worker.harness import write_jobs_file
from tests.worker.sample_jobs import RUNS

HERD = 40


def _worker(tmp_path, app_env, redis_server, names: list[str], schedule: str = "1s", me: str | None = None):
    table = {"callable": "tests.worker.sample_jobs:tick", "schedule": schedule}
    env = {**app_env, "APPLIANCE_JOBS_FILE": str(write_jobs_file(tmp_path / f"{me or 'w'}.toml",
                                                                 {name: table for name in names})),
           "JOBS_ENABLED": ",".join(names)}
    config = load_settings(env, env_file=None)
    pool = make_pool(config, max_size=8, autocommit=True)
    pool.open(wait=True)
    client = redis_server.client()
    for name in names:
        client.hset(f"test:param:{name}", "duration", 0)
    return build(config, client, db=None, ledger=Ledger(pool), me=me).worker, pool


@pytest.fixture
def names() -> list[str]:
    return [f"h{i:02d}" for i in range(HERD)]


def test_a_herd_on_one_instant_runs_every_slot_once_with_one_ledger_row(tmp_path, app_env, redis_server, names,
                                                                        monkeypatch):
    """``HERD`` jobs every second for about four seconds, the real loop and runner: the slots of each instant are
    claimed as one herd, every slot that came runs exactly once, and has one ``job_runs`` row and one ``job_slots``
    row, ``success``, under its own fence."""
    herds: list[int] = []
    real_take = worker_loop.take_herd

    def counting_take(claims, herd):  # the real claim; only counts the herd's size
        herds.append(len(herd))
        return real_take(claims, herd)

    monkeypatch.setattr(worker_loop, "take_herd", counting_take)
    worker, pool = _worker(tmp_path, app_env, redis_server, names)
    worker.plan()
    loop = threading.Thread(target=worker.run_forever, daemon=True)
    loop.start()
    time.sleep(4.2)
    worker.stop()
    loop.join(10)
    assert worker.pool.wait_idle(10)
    assert worker.runner.recorder.stop(10)
    pool.close()
    assert HERD in herds, f"the slots of an instant were not claimed together: herds of {herds}"

    effects = Counter((r["job"], r["slot"]) for r in map(json.loads, redis_server.client().lrange(RUNS, 0, -1))
                      if r["event"] == "start")
    assert effects and max(effects.values()) == 1, "a slot ran twice"
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        runs = conn.execute("SELECT job, slot, outcome, fence FROM job_runs WHERE job = ANY(%s)", (names,)).fetchall()
        slots = conn.execute("SELECT job, slot, outcome, run_id FROM job_slots WHERE job = ANY(%s)",
                             (names,)).fetchall()
    assert Counter((job, slot) for job, slot, _, _ in runs).most_common(1)[0][1] == 1, "a slot with two runs"
    assert {(job, slot.isoformat()) for job, slot, _, _ in runs} == set(effects), "runs and effects differ"
    assert all(outcome == "success" for _, _, outcome, _ in runs)
    assert len(slots) == len({(job, slot) for job, slot, _, _ in slots}) == len(runs)
    assert {outcome for _, _, outcome, _ in slots} == {"success"} and all(run_id for *_, run_id in slots)
    per_job = Counter(job for job, _, _, _ in runs)
    assert set(per_job) == set(names) and min(per_job.values()) >= 3, per_job


def test_a_lease_taken_over_mid_herd_keeps_its_run_from_committing(tmp_path, app_env, redis_server, names):
    """A herd's runs hold their leases and fences; one job's lease is lost and a second worker takes its slot
    over (a newer fence). The herd's ends, written together from many threads (one statement, one Redis script
    per flight), record that run ``lease_lost`` (its Redis finish finds the lease not its own) and every other
    ``success``; the slot's effect then commits once, from the newer run."""
    worker, pool = _worker(tmp_path, app_env, redis_server, names)
    other, other_pool = _worker(tmp_path, app_env, redis_server, names, me="other-worker")
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    herd = [Dispatch(worker.jobs[name], slot) for name in names]
    taken = take_herd(worker.runner.claims, herd)
    assert all(isinstance(run, OpenRun) and run.fence for run in taken), taken
    runs = [run for run in taken if isinstance(run, OpenRun)]
    lost = runs[HERD // 2]
    client = redis_server.client()
    client.delete(keys.lock(lost.dispatch.job.name))  # the lease vanishes (eviction, an operator's DEL)
    newer = other.runner.claims.take(Dispatch(other.jobs[lost.dispatch.job.name], slot))
    assert isinstance(newer, OpenRun) and newer.fence and newer.fence > (lost.fence or 0)

    ends = worker.runner.ends
    answers: dict[str, tuple[Outcome, bool]] = {}

    def end(run: OpenRun) -> None:
        recorded = ends.ledger(Ending(run.dispatch.job.name, run.run_id, Outcome.SUCCESS, Outcome.SUCCESS, None, 1,
                                      None, 1.0))
        ours, _, _ = ends.redis(End(run.dispatch.job.name, run.owner, json.dumps({"run_id": run.run_id}),
                                    recorded.value, run.slot_ms if recorded is Outcome.SUCCESS else None,
                                    time.time(), 1))
        answers[run.run_id] = (recorded, ours)

    threads = [threading.Thread(target=end, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers[lost.run_id] == (Outcome.LEASE_LOST, False)
    assert all(answers[run.run_id] == (Outcome.SUCCESS, True) for run in runs if run is not lost)

    job = lost.dispatch.job.name
    assert client.get(keys.lock(job)) == newer.owner, "the old run's finish released the newer run's lease"
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute("SELECT outcome FROM job_slots WHERE job = %s AND slot = %s", (job, slot)).fetchone()
        assert row is None or row[0] != "success", "the stale run committed its slot"
        assert other.runner.ledger.finish(newer.run_id, Outcome.SUCCESS, Outcome.SUCCESS, None, 1, None, 1.0,
                                          None) is Outcome.SUCCESS
        assert conn.execute("SELECT outcome, run_id FROM job_slots WHERE job = %s AND slot = %s",
                            (job, slot)).fetchone() == ("success", newer.run_id)
        committed = conn.execute("SELECT count(*) FROM job_runs WHERE slot = %s AND committed_at IS NOT NULL",
                                 (slot,)).fetchone()
        assert committed == (HERD,), "one committed run per slot"
    pool.close()
    other_pool.close()


def test_a_herd_without_postgresql_runs_nothing_and_gives_every_lease_back(tmp_path, app_env, redis_server, names,
                                                                          postgres_server):
    """No fence can be issued for any slot of the herd: none runs, each lease is released, each slot is kept for
    the ledger as ``skipped_unavailable``."""
    worker, pool = _worker(tmp_path, app_env, redis_server, names)
    pool.close()  # the ledger's connections are gone: every statement fails, as with PostgreSQL down
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    taken = take_herd(worker.runner.claims, [Dispatch(worker.jobs[name], slot) for name in names])
    assert all(not isinstance(answer, OpenRun) and answer.unavailable == "postgres" for answer in taken)
    client = redis_server.client()
    assert not any(client.exists(keys.lock(name)) for name in names), "a lease was kept"
    assert worker.runner.recorder.pending() == HERD


def test_live_workers_share_a_herd_each_claiming_its_own_jobs_first(tmp_path, app_env, redis_server, names):
    """Three live workers (heartbeats in Redis), one of which does not run some jobs: their shares of one herd
    are disjoint, cover it, and give a job only to a worker that runs it; alone, a worker's share is the herd."""
    worker, pool = _worker(tmp_path, app_env, redis_server, names, me="w-a")
    herd = [Dispatch(worker.jobs[name], datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) for name in names]
    assert worker.shares.split(herd) == (herd, [])
    partial = names[: HERD // 2]
    state = ClusterState(redis_server.client())
    for me, jobs in (("w-a", names), ("w-b", names), ("w-c", partial)):
        state.workers.beat(me, Beat("host", 1, None, time.time(), 60, None, tuple(jobs), ()), 60)
    shares = {me: Shares(state, me) for me in ("w-a", "w-b", "w-c")}
    split = {me: s.split(herd) for me, s in shares.items()}
    owned = {me: {d.job.name for d in mine} for me, (mine, _) in split.items()}
    assert set().union(*owned.values()) == set(names)
    assert sum(len(jobs) for jobs in owned.values()) == HERD, "a job in two shares"
    assert owned["w-c"] <= set(partial) and all(owned.values()), owned
    for mine, rest in split.values():
        assert len(mine) + len(rest) == HERD
    pool.close()
