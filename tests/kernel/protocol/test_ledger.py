"""The ledger's SQL (migrations 0003 and 0004) and its checker, on a real PostgreSQL: what a run may record, and that
``appliance.kernel.protocol.audit`` finds each kind of violation when the history is made to contain one."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from appliance.errors import LockLost
from appliance.kernel.protocol.audit import audit
from appliance.kernel.protocol.fencing import complete_slot
from appliance.kernel.protocol.ledger import Ledger, SlotRecord
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.schedule.model import parse_schedule

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)


TEN_SECONDS = parse_schedule("10s")


@dataclass(frozen=True)
class Job:
    name: str = "j"
    lock_ttl: float = 1.0
    grace: float = 1.0
    schedule: Any = TEN_SECONDS


@dataclass(frozen=True)
class Ctx:
    job: str
    run_id: str


@pytest.fixture
def ledger(migrated_db):
    pool = ConnectionPool(migrated_db, min_size=1, max_size=4, open=True, kwargs={"autocommit": True})
    yield Ledger(pool)
    pool.close()


def _slot(i: int) -> datetime:
    return T0 + timedelta(seconds=10 * i)


def _run(ledger: Ledger, i: int, run_id: str, outcome: Outcome = Outcome.SUCCESS) -> Outcome:
    started = ledger.start("j", _slot(i), "schedule", run_id, f"owner {run_id}", "w", 1, _slot(i))
    assert not started.done
    return ledger.finish(run_id, outcome, Outcome.SUCCESS if outcome is Outcome.SUCCESS else outcome, None, 1,
                         None, 5.0, None)


def _audit(url: str, until: datetime = T0 + timedelta(seconds=25)):
    with psycopg.connect(url, autocommit=True) as conn:
        return audit(conn, [Job()], T0 - timedelta(hours=1), until, NOW)


def _kinds(report) -> list[str]:
    return sorted(v.kind for v in report.violations)


def test_a_clean_history_passes(ledger, migrated_db):
    for i in range(3):
        assert _run(ledger, i, f"r{i}") is Outcome.SUCCESS
    report = _audit(migrated_db)
    assert report.ok and report.jobs["j"].outcomes == {"success": 3}


def test_a_success_with_a_stale_fence_is_recorded_lease_lost_and_leaves_the_slot_open(ledger, migrated_db):
    ledger.start("j", _slot(0), "schedule", "old", "o", "w", 1, T0)
    ledger.start("j", _slot(0), "schedule", "new", "o", "w", 1, T0)  # took over: the old run is abandoned
    assert ledger.finish("old", Outcome.SUCCESS, Outcome.SUCCESS, None, 0, None, 1.0, None) is Outcome.LEASE_LOST
    assert ledger.finish("new", Outcome.SUCCESS, Outcome.SUCCESS, None, 0, None, 1.0, None) is Outcome.SUCCESS
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT outcome, run_id FROM job_slots").fetchall() == [("success", "new")]


def test_complete_slot_commits_the_effect_once_and_a_takeover_finds_the_slot_done(ledger, migrated_db):
    ledger.start("j", _slot(0), "schedule", "a", "o", "w", 1, T0)
    with psycopg.connect(migrated_db) as conn, conn.transaction():
        complete_slot(conn, Ctx("j", "a"))
        # the worker died here, before finish: a takeover opens the slot again
    assert ledger.start("j", _slot(0), "schedule", "b", "o", "w2", 1, T0).done
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT run_id, outcome FROM job_runs").fetchall() == [("a", "success")]
        with pytest.raises(LockLost), conn.transaction():
            complete_slot(conn, Ctx("j", "a"))  # not twice, even by itself after the fence moved on
    assert _audit(migrated_db, until=_slot(0)).ok


def test_a_retry_due_is_not_a_final_outcome_until_a_later_slot_supersedes_it(ledger, migrated_db):
    ledger.start("j", _slot(0), "schedule", "a1", "o", "w", 1, T0)
    ledger.finish("a1", Outcome.RETRYING, None, "boom", 0, None, 1.0, None)
    assert _kinds(_audit(migrated_db, until=_slot(0))) == ["open"], "reported open while its retry is due"
    ledger.start("j", _slot(1), "schedule", "b", "o", "w", 1, _slot(1))  # the retry never came
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT outcome FROM job_slots WHERE slot = %s", (_slot(0),)).fetchone() == ("failed",)


def test_a_failed_attempts_late_end_does_not_reopen_a_run_its_retry_closed(ledger, migrated_db):
    """PostgreSQL was down when attempt 1 failed: its end ("retrying") is written after its retry started
    (which closed it). The late end keeps it closed, as a failure; the retry decides the slot."""
    ledger.start("j", _slot(0), "schedule", "a1", "o", "w", 1, T0)
    ledger.start("j", _slot(0), "schedule", "a2", "o", "w", 2, T0 + timedelta(seconds=4))
    assert ledger.finish("a1", Outcome.RETRYING, None, "db crashed", 0, None, 1.0, None) is Outcome.FAILURE
    assert ledger.finish("a2", Outcome.SUCCESS, Outcome.SUCCESS, None, 1, None, 1.0, None) is Outcome.SUCCESS
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT run_id, outcome FROM job_runs ORDER BY id").fetchall() == [
            ("a1", "failure"), ("a2", "success")]
    assert _kinds(_audit(migrated_db, until=_slot(0))) == []


def test_a_stopping_worker_closes_what_it_leaves_open(ledger, migrated_db):
    """A retry still waiting when its worker stops: ``close_worker`` records the slot failed with the reason
    and closes the attempt; another worker's open run is left alone."""
    ledger.start("j", _slot(0), "schedule", "a1", "o", "w", 1, T0)
    ledger.finish("a1", Outcome.RETRYING, None, "boom", 0, None, 1.0, None)
    ledger.start("k", _slot(0), "schedule", "other", "o", "elsewhere", 1, T0)
    assert ledger.close_worker("w", "the worker stopped") == 1
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT run_id, outcome FROM job_runs ORDER BY id").fetchall() == [
            ("a1", "failure"), ("other", "running")]
        assert conn.execute("SELECT job, outcome, reason FROM job_slots").fetchall() == [
            ("j", "failed", "retry not run: the worker stopped")]


def test_ranks_never_downgrade_a_slot(ledger, migrated_db):
    _run(ledger, 0, "r0")
    ledger.record([SlotRecord("j", _slot(0), Outcome.SKIPPED_LOCKED, "w"),
                   SlotRecord("j", _slot(1), Outcome.MISSED, "w")])
    ledger.record([SlotRecord("j", _slot(1), Outcome.SKIPPED_UNAVAILABLE, "w")])
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT outcome FROM job_slots ORDER BY slot").fetchall() == [
            ("success",), ("skipped_unavailable",)]


def test_concurrent_takeovers_of_one_slot_commit_once_without_deadlock(ledger, migrated_db):
    """Many runs of one slot at once, each trying to commit: exactly one effect, no deadlock."""
    results: list[str] = []

    def attempt(n: int) -> None:
        started = ledger.start("j", _slot(0), "schedule", f"r{n}", "o", f"w{n}", 1, T0)
        if started.done:
            results.append("done")
            return
        results.append(ledger.finish(f"r{n}", Outcome.SUCCESS, Outcome.SUCCESS, None, 0, None, 1.0, None).value)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count("success") == 1 and len(results) == 8
    assert _audit(migrated_db, until=_slot(0)).ok


def test_the_audit_allows_for_worker_clocks_behind_the_shared_clock(ledger, migrated_db):
    """A worker whose clock is 3 s behind reaches slot 2 (and stamps its run's start) 3 s late: 3 s after it
    on the shared clock, that run is still going and its slot has no row yet. Allowing for no skew the audit
    calls it missing and open; allowing for 3 s it waits, and still judges the slots before it."""
    _run(ledger, 0, "r0")
    _run(ledger, 1, "r1")
    ledger.start("j", _slot(2), "schedule", "late", "o", "behind", 1, _slot(2))
    now = _slot(2) + timedelta(seconds=3)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        strict = audit(conn, [Job()], T0, now, now)
        allowing = audit(conn, [Job()], T0, now, now, skew=3.0)
    assert _kinds(strict) == ["open", "unrecorded"]
    assert allowing.ok and allowing.jobs["j"].expected == 2 and allowing.as_dict()["clock_skew_allowed_seconds"] == 3


def _forge(url: str, statements: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_the_audit_finds_overlap_fence_order_and_double_effects(ledger, migrated_db):
    _run(ledger, 0, "r0")
    _run(ledger, 1, "r1")
    _forge(migrated_db, [
        # r1's fence issued before r0 committed, and with a smaller number: two holders at once
        "UPDATE job_runs SET fence_issued_at = (SELECT committed_at FROM job_runs WHERE run_id = 'r0') "
        "- interval '1 ms', fence = 0 WHERE run_id = 'r1'",
        # a second committed run of slot 0
        "INSERT INTO job_runs (run_id, job, slot, trigger, worker, started_at, outcome, fence, fence_issued_at, "
        "committed_at, commit_seq) SELECT 'dup', job, slot, trigger, worker, started_at, 'success', 99, "
        "clock_timestamp(), clock_timestamp(), 1000 FROM job_runs WHERE run_id = 'r0'",
    ])
    assert {"overlap", "fence_order", "double_effect"} <= set(_kinds(_audit(migrated_db, until=_slot(1))))


def test_the_audit_finds_unrecorded_slots_mismatches_and_open_runs(ledger, migrated_db):
    _run(ledger, 0, "r0")
    ledger.start("j", _slot(1), "schedule", "open", "o", "w", 1, _slot(1))
    _run(ledger, 2, "r2")  # its start closed the open run: make it open again, with no ledger row
    _forge(migrated_db, ["UPDATE job_slots SET outcome = 'failed' WHERE run_id = 'r2'",
                         "UPDATE job_runs SET outcome = 'running' WHERE run_id = 'open'",
                         "DELETE FROM job_slots WHERE run_id = 'open'"])
    assert _kinds(_audit(migrated_db)) == ["ledger_mismatch", "open", "unrecorded"]
