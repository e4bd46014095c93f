"""Ledger retention, applied per job (``appliance.kernel.contract.retention.Retention``) in small transactions.

Slot rows older than the job's days are summarised (``appliance_summarise_slots``, migration 0009: deleted and
counted per UTC day and outcome in one statement), failed ones only after ``keep_failed_days``. Runs are deleted
once neither among the job's newest ``keep_runs`` nor younger than their days (failed runs: ``keep_failed_days``),
by the later of their start and their slot (a slot is claimed a little before its instant; a backfill's run is
newer than its slot); runs still open, and runs a slot row still names, are never touched: the audit finds every
row's run. Rows another transaction holds are skipped, so replicas doing this at once
neither wait on each other nor count a slot twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from appliance.kernel.contract.retention import Retention
from appliance.kernel.protocol.db.rows import one

#: Rows per transaction: no lock is held for long, a stop leaves nothing half done.
BATCH = 5000
#: Run outcomes kept for ``keep_failed_days``.
FAILED_RUNS = ("failure", "lease_lost", "abandoned", "cancelled")

_DELETE_RUNS = """
DELETE FROM job_runs WHERE id IN (
    SELECT r.id FROM job_runs r
    WHERE r.job = %(job)s AND r.outcome NOT IN ('running', 'retrying')
      AND greatest(r.started_at, r.slot) < CASE WHEN r.outcome = ANY(%(failed)s) THEN %(failed_before)s
                                                ELSE %(before)s END
      AND NOT EXISTS (SELECT 1 FROM job_slots s WHERE s.job = r.job AND s.slot = r.slot AND s.run_id = r.run_id)
      AND r.id < (SELECT coalesce(min(id), 0) FROM
                  (SELECT id FROM job_runs WHERE job = %(job)s ORDER BY id DESC LIMIT %(keep)s) AS newest)
    ORDER BY r.id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
"""


@dataclass(frozen=True)
class Pruned:
    slots_summarised: int
    runs_deleted: int


def apply(conn: psycopg.Connection, job: str, retention: Retention, now: datetime, batch: int = BATCH) -> Pruned:
    """Apply ``job``'s retention as of ``now`` (PostgreSQL's clock); ``conn`` in autocommit mode."""
    before = now - timedelta(days=retention.keep_days)
    failed_before = now - timedelta(days=retention.keep_failed_days)
    summarised = 0
    for failed, cutoff in ((False, before), (True, failed_before)):
        while True:
            (count,) = one(conn.execute("SELECT appliance_summarise_slots(%s, %s, %s, %s)",
                                        (job, cutoff, failed, batch)))
            summarised += int(count)
            if count < batch:
                break
    deleted = 0
    while True:
        count = conn.execute(_DELETE_RUNS, {"job": job, "failed": list(FAILED_RUNS), "before": before,
                                            "failed_before": failed_before, "keep": retention.keep_runs,
                                            "batch": batch}).rowcount
        deleted += count
        if count < batch:
            break
    return Pruned(summarised, deleted)
