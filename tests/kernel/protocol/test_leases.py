"""The lease scripts and the cluster state against a real redis-server."""

from __future__ import annotations

import json

import pytest

from appliance.errors import Conflict, NotFound
from appliance.kernel.protocol import keys, locks
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.protocol.owner import make_token, new_run_id, parse_token
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.jobs import PublishedJob
from appliance.kernel.protocol.state.workers import Beat
from appliance.kernel.runtime.clock import SYSTEM


@pytest.fixture
def r(redis_server):
    return redis_server.client()


@pytest.fixture
def scripts(r):
    return locks.register(r)


def token() -> str:
    return make_token(new_run_id(), SYSTEM.now())


def test_owner_token_is_readable_and_parsable():
    t = make_token("abc123", SYSTEM.now(), host="web-1", pid=42)
    info = parse_token(t)
    assert t.startswith("web-1 pid=42 started=") and t.endswith(" run=abc123")
    assert (info.host, info.pid, info.run_id, info.worker_id) == ("web-1", 42, "abc123", "web-1:42")
    assert parse_token("something else") is None


def test_acquire_is_exclusive_and_answers_why(r, scripts):
    a, b = token(), token()
    assert locks.acquire(scripts, "job", a, 10, 1000)[0] is Claim.OK
    claim, pttl = locks.acquire(scripts, "job", b, 10, 1000)
    assert claim is Claim.RUNNING and 9000 < pttl <= 10000
    assert locks.acquire(scripts, "job", b, 10, 2000)[0] is Claim.LOCKED
    assert r.get("lock:job") == a
    assert json.loads(r.hget(keys.RUNNING, "job")) == {}


def test_a_finished_slot_is_never_run_again_even_by_a_late_replica(r, scripts):
    a = token()
    assert locks.acquire(scripts, "job", a, 10, 1000)[0] is Claim.OK
    record = json.dumps({"outcome": "success"})
    assert locks.finish(scripts, "job", a, record, "success", 1000, 10, 1.0, 3) == (True, 0, False)
    assert locks.acquire(scripts, "job", token(), 10, 1000)[0] is Claim.DONE
    # An earlier slot is not run either; the answer tells a worker it may have been passed over.
    assert locks.acquire(scripts, "job", token(), 10, 999)[0] is Claim.PASSED
    assert locks.acquire(scripts, "job", token(), 10, 2000)[0] is Claim.OK
    assert r.hget(keys.COUNTS, "job:processed") == "3"
    assert r.hget(keys.COUNTS, "job:success") == "1"
    assert r.llen(keys.history("job")) == 1


def test_release_and_renew_only_by_the_owner(r, scripts):
    a, b = token(), token()
    locks.acquire(scripts, "job", a, 1, None)
    assert not locks.release(scripts, "job", b)
    assert not locks.renew(scripts, "job", b, 10)
    assert locks.renew(scripts, "job", a, 10)
    assert r.pttl("lock:job") > 5000
    assert locks.release(scripts, "job", a)
    assert not r.exists("lock:job")


def test_finish_after_losing_the_lease_leaves_the_new_holder_alone(r, scripts):
    a, b = token(), token()
    locks.acquire(scripts, "job", a, 10, 1000)
    r.delete("lock:job")
    locks.acquire(scripts, "job", b, 10, None)
    assert locks.finish(scripts, "job", a, "{}", "success", 1000, 10, None, 0) == (False, 0, False)
    assert r.get("lock:job") == b


def test_history_is_capped(r, scripts):
    for i in range(5):
        t = token()
        locks.acquire(scripts, "job", t, 10, i)
        locks.finish(scripts, "job", t, json.dumps({"i": i, "started": str(i)}), "success", i, 3, None, 0)
    assert [json.loads(v)["i"] for v in r.lrange(keys.history("job"), 0, -1)] == [4, 3, 2]


def test_clearing_a_lease_refuses_a_live_holder_unless_forced(r, scripts):
    state = ClusterState(r)
    live = make_token("run1", SYSTEM.now(), host="h", pid=7)
    locks.acquire(scripts, "job", live, 30, None)
    state.workers.beat("h:7", Beat("h", 7, None, 0, 30, None, (), ()), 30)
    with pytest.raises(Conflict):
        state.leases.clear("job")
    lease = state.leases.clear("job", force=True)
    assert lease.holder == live and lease.holder_alive is True
    assert not r.exists("lock:job")
    with pytest.raises(NotFound):
        state.leases.clear("job")
    dead = make_token("run2", SYSTEM.now(), host="h", pid=8)
    locks.acquire(scripts, "job", dead, 30, None)
    assert state.leases.clear("job").holder_alive is False


def test_leases_listing_shows_holder_age_and_ttl(r, scripts):
    locks.acquire(scripts, "call-scheduler", make_token("x", SYSTEM.now(), host="w", pid=3), 60, None)
    (lease,) = ClusterState(r).leases.held()
    assert lease.key == "lock:call-scheduler" and lease.host == "w" and lease.pid == 3
    assert lease.ttl_seconds is not None and 59 < lease.ttl_seconds <= 60
    assert lease.age_seconds is not None and 0 <= lease.age_seconds < 5
    assert list(lease.to_json()) == ["job", "key", "holder", "host", "pid", "run_id", "age_seconds", "ttl_seconds",
                                     "holder_alive"]


def test_triggers_are_taken_once(r):
    state = ClusterState(r)
    state.jobs.publish([PublishedJob("job", schedule="1h")])
    trigger_id = state.triggers.request("job", by="test")
    assert state.triggers.pending("job") == 1
    trigger = state.triggers.take("job")
    assert trigger is not None and trigger.id == trigger_id and trigger.by == "test" and trigger.reason == "manual"
    assert state.triggers.take("job") is None
    with pytest.raises(NotFound):
        state.triggers.request("nope", by="test")


def test_dead_letters_list_retry_and_drop(r):
    state = ClusterState(r)
    state.jobs.publish([PublishedJob("job", schedule="1h")])
    first = state.dead_letters.add("job", error="boom", attempts=4)
    second = state.dead_letters.add("job", error="bang", attempts=4)
    assert [d.id for d in state.dead_letters.newest()] == [second, first]
    assert state.history.counts()["job:dead_letter"] == 2
    state.dead_letters.retry(first, by="test")
    trigger = state.triggers.take("job")
    assert trigger is not None and trigger.payload == {"dead_letter": first, "slot": None}
    state.dead_letters.drop(second)
    assert state.dead_letters.newest() == []
    with pytest.raises(NotFound):
        state.dead_letters.drop(second)


def test_run_ids_are_wide_enough_for_a_ledger_of_years():
    """Ids key job_runs for as long as retention keeps them: 96 random bits, distinct, and carried whole
    through a lease's owner token."""
    ids = {new_run_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and {len(i) for i in ids} == {24}
    run_id = next(iter(ids))
    assert parse_token(make_token(run_id, SYSTEM.now())).run_id == run_id
