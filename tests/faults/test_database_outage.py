"""PostgreSQL outages against real worker processes: the database crashes (SIGKILL of the postmaster, as an
OOM kill or a node loss would) before a slot and comes back within its grace, or crashes in the middle of a
run. The promise holds through both: each slot has one committed effect or one ledger row saying why not,
the rows of the outage are written once the database is back, and ``appliance audit`` finds nothing.

Each test has its own durable PostgreSQL cluster (``durable_cluster``), so it can kill and restart it without
touching other tests."""

from __future__ import annotations

import signal
import time

import pytest

from tests.services import PostgresServer, wait_until

pytestmark = pytest.mark.process


def _crash(server: PostgresServer) -> None:
    server.stop(signal.SIGKILL)  # no shutdown checkpoint: the restart replays the WAL


def test_postgres_crashed_through_a_slot_within_grace_is_caught_up_once(durable_cluster, durable_postgres):
    """The database is down from a second before a slot to two seconds after it: the slot cannot be fenced,
    so it does not run then; it is recorded skipped_unavailable in memory, and once PostgreSQL answers again
    within the job's grace it runs once and its ledger row ends as that run's outcome."""
    cluster = durable_cluster
    cluster.schedule = "10s"
    worker = cluster.start()
    first = cluster.wait_mark("committed")[0][0]
    slot = first.timestamp() + 10
    time.sleep(max(0.0, slot - 1 - time.time()))
    _crash(durable_postgres)
    time.sleep(max(0.0, slot + 2 - time.time()))
    durable_postgres.start()
    line = worker.wait_for_log("catching up a slot skipped during an outage", timeout=20)
    (effect,) = wait_until(lambda: cluster.effects(line["slot"]), 20, "the caught-up slot's effect")
    assert int(effect[0].timestamp()) == int(slot)
    assert cluster.slot_row(line["slot"])[:2] == ("success", effect[1])
    cluster.stop_all()
    assert len(cluster.effects(line["slot"])) == 1
    cluster.assert_audit_clean()


def test_postgres_crashed_in_the_middle_of_a_run_is_retried_once_it_is_back(durable_cluster, durable_postgres):
    """The database dies while a run is in its body (its fence issued, its effect not yet written) and comes
    back three seconds later. The run cannot commit and fails; its retry, due while the database is still
    down, cannot be fenced, so it waits for the database instead of giving the slot up, and then runs once:
    one effect, the slot a success, the failed attempt closed."""
    cluster = durable_cluster
    cluster.schedule = "30s"
    cluster.lock_ttl = 5.0
    worker = cluster.start(FAULT_WORK="2")
    slot, run_id, _pid = cluster.wait_mark("started", timeout=45)[0]  # the first slot comes within 30 s
    _crash(durable_postgres)
    time.sleep(3)
    durable_postgres.start()
    (effect,) = wait_until(lambda: cluster.effects(slot), 20, "the retry's effect")
    assert effect[1] != run_id
    wait_until(lambda: cluster.slot_row(slot)[:2] == ("success", effect[1]), 10, "the slot recorded a success")
    assert cluster.run_row(run_id)[0] == "failure"
    assert cluster.sql("SELECT attempt FROM job_runs WHERE run_id = %s", (effect[1],)) == [(2,)]
    assert worker.alive()
    cluster.stop_all()
    assert cluster.effects(slot) == [effect]
    cluster.assert_audit_clean()


def test_a_retry_left_waiting_when_the_worker_stops_is_recorded_failed(durable_cluster):
    """A run fails and its retry waits out its backoff; the worker is stopped meanwhile. The retry will not
    run, so the slot is recorded failed with that reason and the failed attempt is closed: nothing is left
    open for the audit or for another worker to guess about."""
    cluster = durable_cluster
    cluster.schedule = "30s"
    worker = cluster.start(FAULT_FAIL="1", JOB_RETRY_BACKOFF_MS="20000")
    worker.wait_for_log("retry scheduled", timeout=40)
    slot, run_id, _pid = cluster.marks("started")[0]
    cluster.stop_all()
    assert cluster.run_row(run_id)[0] == "failure"
    outcome, _by, reason = cluster.slot_row(slot)
    assert (outcome, reason) == ("failed", "retry not run: the worker stopped")
    assert cluster.sql("SELECT run_id FROM job_runs WHERE outcome IN ('running', 'retrying')") == []
    cluster.assert_audit_clean()


def test_a_database_that_may_lose_commits_is_a_loud_warning(durable_cluster):
    """Fencing cannot survive a fence issued twice, which a crash of a server that acknowledges commits
    before they are on disk can cause: the worker says so at start (read per session, as its runs see it)."""
    cluster = durable_cluster
    durable = cluster.start()
    assert not [line for line in durable.log_lines() if "UNSAFE POSTGRESQL" in line.get("msg", "")]
    (name,) = cluster.sql("SELECT current_database()")[0]
    cluster.sql(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    lossy = cluster.start(home="lossy")
    (line,) = [x for x in lossy.log_lines() if "UNSAFE POSTGRESQL" in x.get("msg", "")]
    assert line["level"] == "warning" and "synchronous_commit=off" in line["msg"] and "fsync=off" not in line["msg"]
