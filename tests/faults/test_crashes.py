"""Faults at each step of a run, against real worker processes, redis-server and PostgreSQL: a holder paused
past its lease, kill -9 before and after the final commit (also of a job's first-ever slot) and after the
run's end is recorded but before its lease is released, Redis shut down through a slot, keys evicted under a
live holder (PostgreSQL crashes: test_database_outage.py). Each test checks the effects (exactly one per slot), the
ledger's account of every run, and ends with ``appliance audit`` finding nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import timedelta

import pytest
import redis

from tests.services import wait_until
from tests.worker.harness import WorkerProcess

pytestmark = pytest.mark.process


def _holder(cluster, pid: int):
    (worker,) = [w for w in cluster.workers if w.pid == pid]
    return worker


def test_a_holder_paused_past_its_lease_reads_its_fence_late_and_cannot_commit(cluster):
    """SIGSTOP the holder mid-run for longer than its lease: the other worker takes the slot over and
    commits; the paused run, resumed, reads ``ctx.fence`` in its final transaction and is refused."""
    cluster.schedule = "10s"
    cluster.start(FAULT_WORK="2")
    cluster.start(FAULT_WORK="2")
    slot, paused_run, pid = cluster.wait_mark("started")[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        (effect,) = wait_until(lambda: cluster.effects(slot), 20, "the takeover's effect")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: cluster.run_row(paused_run)[0] == "lease_lost", 15, "the paused run's end")
    assert effect[1] != paused_run and effect[3] != pid
    assert cluster.effects(slot) == [effect], "one effect for the slot"
    assert cluster.slot_row(slot)[:2] == ("success", effect[1])
    cluster.stop_all()
    cluster.assert_audit_clean()


def test_kill_after_the_final_commit_is_not_run_again_by_the_takeover(cluster):
    """kill -9 between the job's final commit and the run's end: Redis never hears of the end, but the
    takeover finds the slot done in PostgreSQL and does not run it again."""
    cluster.schedule = "10s"
    holder = cluster.start(FAULT_BLOCK="after_commit")
    slot, run_id, _ = cluster.wait_mark("committed")[0]
    other = cluster.start()
    holder.kill()
    other.wait_for_log("slot already committed, or a later one; not run again", timeout=15)
    assert [e[1] for e in cluster.effects(slot)] == [run_id]
    assert cluster.slot_row(slot)[:2] == ("success", run_id)
    wait_until(lambda: cluster.run_row(run_id)[0] == "success", 10, "the dead holder's run closed")
    assert cluster.run_row(run_id)[2] is True
    cluster.stop_all()
    cluster.assert_audit_clean()


def test_kill_after_the_run_is_recorded_but_before_its_lease_is_released(cluster, redis_server):
    """kill -9 in the last step of a run: its end is in PostgreSQL, but Redis writes are paused, so the lease
    and the running entry are never released. The worker elsewhere waits out the lease, finds the slot done
    in PostgreSQL, does not run it again, and runs the next slot."""
    client = redis_server.client()
    cluster.schedule = "10s"
    # The run lingers after its commit long enough for the other worker to start (a few seconds on a loaded
    # machine) and Redis' writes to be paused before its end is recorded and its lease released.
    holder = cluster.start(FAULT_LINGER="6")
    slot, run_id, _ = cluster.wait_mark("committed")[0]
    other = cluster.start(home="elsewhere")
    # Writes only: the holder's release blocks, reads go on. Unpaused below; the bound only covers a slow machine.
    client.client_pause(30000, all=False)
    try:
        wait_until(lambda: cluster.run_row(run_id)[0] == "success", 15, "the run's end in PostgreSQL")
        time.sleep(0.3)  # the release is on its way to (and blocked in) Redis
        holder.kill()
        # Killed in that step: its running entry was never removed (the lease itself has expired by now).
        # Checked before the writes resume: then the other worker may take the job over at any moment.
        assert client.hexists("appliance:running", "effect")
    finally:
        client.client_unpause()
    other.wait_for_log("slot already committed, or a later one; not run again", timeout=15)
    assert [e[1] for e in cluster.effects(slot)] == [run_id]
    assert cluster.slot_row(slot)[:2] == ("success", run_id)
    (after,) = wait_until(lambda: cluster.effects(slot + timedelta(seconds=10)), 20, "the next slot's effect")
    assert after[3] == other.pid
    cluster.stop_all()
    cluster.assert_audit_clean()


@pytest.mark.parametrize("where", ["same-home", "other-home"])
def test_a_first_ever_run_killed_before_its_commit_runs_once_more(cluster, where):
    """kill -9 in a job's very first run, before its commit (no "done" marker exists anywhere). A worker
    restarted in the same APPLIANCE_HOME knows at once that its predecessor is dead; one elsewhere waits for
    the lease to expire. Either runs the slot once, and the killed run is recorded abandoned."""
    cluster.schedule = "10s"
    victim = cluster.start(FAULT_BLOCK="before_commit")
    slot, killed_run, _ = cluster.wait_mark("started")[0]
    victim.kill()
    cluster.start(home=None if where == "same-home" else "elsewhere")
    (effect,) = wait_until(lambda: cluster.effects(slot), 20, "the slot's effect")
    assert effect[1] != killed_run
    assert cluster.slot_row(slot)[:2] == ("success", effect[1])
    wait_until(lambda: cluster.run_row(killed_run)[0] == "abandoned", 10, "the killed run closed")
    cluster.stop_all()
    assert len(cluster.effects(slot)) == 1, "one effect for the slot, counted once no worker is left to add one"
    cluster.assert_audit_clean()


def test_redis_shut_down_through_a_slot_within_grace_is_caught_up_once(cluster, redis_server):
    """``SHUTDOWN NOSAVE`` a second before a slot; Redis comes back (empty) two seconds after it, within the
    job's grace: the slot runs once then, and its ledger row ends as its run's outcome."""
    cluster.schedule = "10s"
    worker = cluster.start()
    first = cluster.wait_mark("committed")[0][0]
    slot = first.timestamp() + 10
    time.sleep(max(0.0, slot - 1 - time.time()))
    with contextlib.suppress(redis.ConnectionError):  # the server closed the connection: it is down
        redis_server.client().shutdown(nosave=True)
    redis_server.proc.wait(5)
    time.sleep(max(0.0, slot + 2 - time.time()))
    redis_server.start()
    line = worker.wait_for_log("catching up a slot skipped during an outage", timeout=15)
    (effect,) = wait_until(lambda: cluster.effects(line["slot"]), 15, "the caught-up slot's effect")
    assert cluster.slot_row(line["slot"])[:2] == ("success", effect[1])
    assert int(first.timestamp()) + 10 == int(effect[0].timestamp())
    cluster.stop_all()
    cluster.assert_audit_clean()


def test_lock_evicted_under_its_live_holder_gives_no_second_effect(cluster, redis_server):
    """Redis under memory pressure with an evicting policy drops the lease of a running job; the next slot
    runs on the other worker with a newer fence, and the first run's late commit is refused."""
    client = redis_server.client()
    client.config_set("maxmemory", "4mb")
    client.config_set("maxmemory-policy", "allkeys-random")  # any key may go: the lease surely will
    cluster.schedule = "5s"
    first = cluster.start(FAULT_WORK="7")
    first.wait_for_log("worker started")
    assert any("UNSAFE REDIS" in line.get("msg", "") for line in first.log_lines())
    slot, run_id, _pid = cluster.wait_mark("started")[0]
    cluster.start(FAULT_WORK="0.2")
    blob = "x" * 256 * 1024
    for i in range(400):
        if not client.exists("lock:effect"):
            break
        client.set(f"filler:{i}", blob)
    else:
        pytest.fail("the lease was never evicted")
    client.config_set("maxmemory", "0")
    wait_until(lambda: cluster.run_row(run_id)[0] == "lease_lost", 20, "the evicted holder's end")
    effects = cluster.effects()
    assert effects and run_id not in [e[1] for e in effects], "the evicted holder committed nothing"
    assert all(len(cluster.effects(e[0])) == 1 for e in effects), "one effect per slot"
    outcome, by, _ = cluster.slot_row(slot)
    assert (outcome, by) in {("lease_lost", run_id)} | {("success", e[1]) for e in cluster.effects(slot)}
    cluster.stop_all()
    cluster.assert_audit_clean()


def test_an_evicting_policy_is_a_loud_warning_or_a_refusal(cluster, redis_server):
    client = redis_server.client()
    client.config_set("maxmemory-policy", "volatile-lru")
    worker = cluster.start(HEARTBEAT_TTL="3")
    (line,) = [x for x in worker.log_lines() if "UNSAFE REDIS" in x.get("msg", "")]
    assert line["level"] == "warning" and "volatile-lru" in line["msg"] and "noeviction" in line["msg"]
    refused = WorkerProcess(cluster.env(REDIS_EVICTION_POLICY="refuse"), cluster.tmp / "refused.log")
    assert refused.proc.wait(30) == 2
    assert any("refusing to start" in x.get("msg", "") for x in refused.log_lines())
    refused.kill()
    client.config_set("maxmemory-policy", "noeviction")  # fixed at run time: the heartbeat notices
    worker.wait_for_log("Redis eviction policy is safe again (noeviction)", timeout=10)


def test_skipped_slots_are_logged_once_per_change_of_state(cluster):
    """A run longer than the period: its slots are skipped (and recorded each), but the log says so once
    per change, not once per slot."""
    cluster.schedule = "1s"
    worker = cluster.start(FAULT_WORK="3.5")
    cluster.wait_mark("committed", count=2, timeout=30)
    cluster.stop_all()
    lines = [line["msg"] for line in worker.log_lines() if line.get("msg", "").startswith("slots ")]
    skipped = cluster.sql("SELECT count(*) FROM job_slots WHERE outcome = 'skipped_overlap'")[0][0]
    assert skipped >= 4 and 2 <= lines.count("slots skipped until further notice") <= skipped / 2
    assert lines.count("slots run again") >= 1
