"""Migration 0070 (the ledger at a year's size) on a real PostgreSQL: it applies to a ledger that has rows, the
reads it serves answer as before (the dashboard's timeline per job, the history's slots without a run, the audit),
and retention still summarises and deletes old rows under it. Figures are ``scripts/bench ledger_scale``'s."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from appliance.kernel.contract.retention import Retention
from appliance.kernel.protocol import retention
from appliance.kernel.protocol.audit import audit
from appliance.kernel.protocol.db.migrate import available, migrate
from appliance.kernel.protocol.ledger import Ledger, SlotRecord, read_history
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso
from appliance.kernel.schedule.model import parse_schedule
from appliance.sidecar import timeline

VERSION = 70
T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
SLOTS = 12  # of each job, 10 s apart
TEN_SECONDS = parse_schedule("10s")


@dataclass(frozen=True)
class Job:
    name: str
    lock_ttl: float = 1.0
    grace: float = 1.0
    schedule: Any = TEN_SECONDS


def _slot(i: int) -> datetime:
    return T0 + timedelta(seconds=10 * i)


def _fill(url: str) -> None:
    """Two jobs' slots: most run and succeed, every fourth of job a is skipped (no run), one of b fails."""
    pool = ConnectionPool(url, min_size=1, max_size=2, open=True, kwargs={"autocommit": True})
    ledger = Ledger(pool)
    try:
        for job in ("a", "b"):
            for i in range(SLOTS):
                if job == "a" and i % 4 == 3:
                    ledger.record([SlotRecord(job, _slot(i), Outcome.SKIPPED_LOCKED, "w", "held")])
                    continue
                run_id = f"{job}{i}"
                assert not ledger.open(job, _slot(i), "schedule", run_id, f"o {run_id}", "w", 1, _slot(i),
                                       _slot(i), 1, False).done
                outcome = Outcome.FAILED if (job, i) == ("b", 5) else Outcome.SUCCESS
                ledger.finish(run_id, Outcome.FAILURE if outcome is Outcome.FAILED else outcome, outcome, None, 1,
                              None, 5.0, None)
    finally:
        pool.close()


@pytest.fixture
def filled_then_migrated(database_url):
    """Every migration before 0070 applied, the ledger filled, then 0070 applied to it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn, [m for m in available() if m.version < VERSION])
    _fill(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        before = conn.execute("SELECT (SELECT count(*) FROM job_slots), (SELECT count(*) FROM job_runs)").fetchone()
        applied = migrate(conn)
        assert [m.version for m in applied] == [VERSION]
        assert conn.execute("SELECT (SELECT count(*) FROM job_slots), (SELECT count(*) FROM job_runs)"
                            ).fetchone() == before
    return database_url


def test_the_migration_applies_to_a_filled_ledger_and_its_indexes_are_valid(filled_then_migrated):
    with psycopg.connect(filled_then_migrated, autocommit=True) as conn:
        indexes = dict(conn.execute(
            "SELECT i.relname, a.amname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_am a ON a.oid = i.relam WHERE x.indrelid IN ('job_slots'::regclass, 'job_runs'::regclass) "
            "AND x.indisvalid").fetchall())
        assert indexes["job_slots_slot"] == "brin"
        assert {"job_runs_committed", "job_slots_no_run"} <= set(indexes)
        # Its rows are those it may hold: only committed runs, only slots without a run.
        assert conn.execute("SELECT count(*) FROM job_runs WHERE committed_at IS NOT NULL").fetchone() == (
            2 * SLOTS - SLOTS // 4 - 1,)
        report = audit(conn, [Job("a"), Job("b")], T0, _slot(SLOTS - 1), _slot(SLOTS + 1))
        assert report.ok, report.violations
        assert report.jobs["a"].outcomes == {"success": SLOTS - SLOTS // 4, "skipped_locked": SLOTS // 4}


def test_the_timeline_keeps_each_jobs_newest_marks_of_the_window(filled_then_migrated):
    params = {"since": _slot(1), "until": _slot(10), "limit": 3}
    with psycopg.connect(filled_then_migrated, autocommit=True) as conn:
        slots = conn.execute(timeline._SLOTS, params).fetchall()
        runs = conn.execute(timeline._RUNS, params).fetchall()
    assert [(job, slot) for job, slot, *_ in slots] == [(job, _slot(i)) for job in "ab" for i in (8, 9, 10)]
    assert [outcome for _job, _slot_at, outcome, *_ in slots] == ["success", "success", "success"] * 2
    assert [(job, run_id) for job, run_id, *_ in runs] == [("a", "a8"), ("a", "a9"), ("a", "a10"),
                                                           ("b", "b8"), ("b", "b9"), ("b", "b10")]


def test_the_history_finds_the_slots_that_did_not_run(filled_then_migrated):
    with psycopg.connect(filled_then_migrated, autocommit=True) as conn:
        skipped = [e.slot for e in read_history(conn, "a", 50) if e.run_id is None]
        every = [(e.job, e.slot) for e in read_history(conn, None, 50) if e.run_id is None]
    expected = [_slot(i) for i in range(SLOTS - 1, -1, -1) if i % 4 == 3]
    assert skipped == [iso(s) for s in expected]
    assert every == [("a", iso(s)) for s in expected]


def test_retention_still_summarises_and_deletes_under_the_new_layout(filled_then_migrated):
    now = _slot(SLOTS) + timedelta(days=1)
    keep = Retention(keep_runs=2, keep_days=1.0 + 60 / 86400, keep_failed_days=90.0)  # slots before the 7th
    with psycopg.connect(filled_then_migrated, autocommit=True) as conn:
        pruned = [retention.apply(conn, job, keep, now) for job in ("a", "b")]
        assert pruned[0].slots_summarised == 6 and pruned[1].slots_summarised == 5  # b's failed slot is kept
        assert conn.execute("SELECT count(*) FROM job_slots WHERE slot < %s", (_slot(6),)).fetchone() == (1,)
        assert conn.execute("SELECT sum(slots) FROM job_slot_summaries").fetchone() == (11,)
        assert all(p.runs_deleted > 0 for p in pruned)
        report = audit(conn, [Job("a"), Job("b")], T0, _slot(SLOTS - 1), now)
        assert report.ok, report.violations
        assert report.jobs["b"].recorded == SLOTS
