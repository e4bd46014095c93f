"""A catch-up never costs the next slot (``appliance.worker.catch_up``), with real workers, redis-server and
PostgreSQL. A worker runs a 10 s job (``tests.faults.jobs:effect``), stops after a slot, and a worker started
while the job's next slot but one is near finds the slot in between missed: it either coalesces it into the
next slot (too close to run) or runs it and makes the next slot wait; never both lost. ``appliance audit``
checks the history."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.schedule.model import parse_schedule
from appliance.worker.catch_up import coalesced_into
from appliance.worker.dispatch import Dispatch
from tests.services import wait_until

PERIOD = timedelta(seconds=10)


def _sleep_until(at: datetime) -> None:
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


def _down_for_a_slot(cluster, work: str) -> datetime:
    """One worker runs a slot, then stops; returns that slot."""
    first = cluster.start("home-0", FAULT_WORK=work)
    (slot, _, _), *_ = cluster.wait_mark("committed", timeout=30)
    wait_until(lambda: cluster.slot_row(slot), 10, "the first slot's row")
    first.terminate()
    return slot


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(120)
def test_a_late_slot_too_close_to_the_next_is_coalesced_into_it(cluster):
    """Runs take 3 s; the worker comes back 2 s before the next slot but one. The missed slot would run into
    it: recorded coalesced, and the next slot runs on time (without the policy the late run held the job and
    the next slot was recorded skipped_locked)."""
    cluster.schedule = "10s"
    s0 = _down_for_a_slot(cluster, work="3")
    s1, s2 = s0 + PERIOD, s0 + 2 * PERIOD
    _sleep_until(s2 - timedelta(seconds=2.5))
    cluster.start("home-0", FAULT_WORK="3")
    wait_until(lambda: (row := cluster.slot_row(s2)) and row[0] == "success", 25, "the next slot's success")
    cluster.stop_all()
    outcome, _, reason = cluster.slot_row(s1)
    assert outcome == "coalesced" and s2.strftime("%H:%M:%S") in reason, (outcome, reason)
    assert cluster.effects(s1) == [] and len(cluster.effects(s2)) == 1
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(120)
def test_a_late_slot_that_runs_into_the_next_makes_it_wait_on_every_replica(cluster):
    """Runs took 0.2 s, so the missed slot, 3 s before the next one but one, is run; this time it takes 5 s.
    The next slot waits for it, on its worker and on a second replica started meanwhile, and runs once it
    ends: both slots succeed, and no worker recorded a skip."""
    cluster.schedule = "10s"
    s0 = _down_for_a_slot(cluster, work="0.2")
    s1, s2 = s0 + PERIOD, s0 + 2 * PERIOD
    _sleep_until(s2 - timedelta(seconds=4))
    catcher = cluster.start("home-0", FAULT_WORK="5")
    wait_until(lambda: any(m[0] == s1 for m in cluster.marks("started")), 10, "the late slot's run")
    cluster.start("home-1", FAULT_WORK="5")
    wait_until(lambda: (row := cluster.slot_row(s2)) and row[0] == "success", 30, "the next slot's success")
    cluster.stop_all()
    assert cluster.slot_row(s1)[0] == "success"
    assert len(cluster.effects(s1)) == 1 and len(cluster.effects(s2)) == 1
    skipped = [line for worker in cluster.workers for line in worker.log_lines()
               if line.get("msg") == "slots skipped until further notice"]
    assert skipped == [], skipped
    assert catcher.pid in {pid for *_, pid in cluster.effects(s1)}
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(120)
def test_a_redis_outage_that_ends_just_before_the_next_slot_costs_neither(cluster, redis_server):
    """Redis goes down (SHUTDOWN NOSAVE) a second before a slot and comes back 0.3 s before the next one: the
    outage's catch-up of the first is coalesced into the next (or, found too late, left skipped), and the next
    slot runs on time; neither is recorded skipped_locked."""
    cluster.schedule = "10s"
    cluster.start("home-0", FAULT_WORK="1.5")
    (s0, _, _), *_ = cluster.wait_mark("committed", timeout=30)
    s1, s2 = s0 + PERIOD, s0 + 2 * PERIOD
    _sleep_until(s1 - timedelta(seconds=1))
    with contextlib.suppress(redis.ConnectionError):  # the server closed the connection: it is down
        redis_server.client().shutdown(nosave=True)
    assert redis_server.proc is not None
    redis_server.proc.wait(5)
    _sleep_until(s2 - timedelta(seconds=0.3))
    redis_server.start()
    wait_until(lambda: (row := cluster.slot_row(s2)) and row[0] == "success", 25, "the next slot's success")
    cluster.stop_all()
    assert cluster.slot_row(s1)[0] in ("coalesced", "skipped_unavailable"), cluster.slot_row(s1)
    assert cluster.effects(s1) == [] and len(cluster.effects(s2)) == 1
    cluster.assert_audit_clean()


def _job(schedule: str) -> JobSettings:
    return JobSettings(name="j", func=lambda ctx: None, schedule=parse_schedule(schedule), timezone="UTC", lock_ttl=5,
                       max_retries=0, grace=60, enabled=True, needs=(), description="", source="test")


T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("late_by", "expected", "into"), [
    (9.5, 0.1, T0 + PERIOD),  # 0.5 s before the next slot: within the least window (1 s)
    (8.0, 0.1, None),  # 2 s before it, runs of 0.1 s: runs
    (8.0, 3.0, T0 + PERIOD),  # 2 s before it, runs of 3 s: would run into it
    (2.0, 3.0, None),
])
def test_the_coalescing_window(late_by, expected, into):
    d = Dispatch(_job("10s"), T0, catch_up=True)
    assert coalesced_into(d, T0 + timedelta(seconds=late_by), expected) == into
    # Only a catch-up's first attempt is ever coalesced.
    assert coalesced_into(Dispatch(_job("10s"), T0), T0 + timedelta(seconds=9.5), 5.0) is None
    assert coalesced_into(Dispatch(_job("10s"), T0, attempt=2, catch_up=True), T0 + timedelta(seconds=9.5),
                          5.0) is None
