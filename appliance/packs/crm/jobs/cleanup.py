"""``call-cleanup`` (daily at 02:00): deletes old records in small batches.

Deleted: call records (``call_attempts``) and finished calls (``completed``, ``failed``, ``cancelled``) older
than ``CALL_RETENTION_DAYS``; activity and settled outbox rows older than ``ACTIVITY_RETENTION_DAYS`` (30). The
appliance's own ledger (``job_runs``, ``job_slots``) is not the pack's: the worker applies each job's retention to
it, summarising old slot rows so ``appliance audit`` still proves old windows (``appliance.worker.retention``).
Each batch of ``CLEANUP_BATCH_SIZE`` rows is its own short transaction, with a
checkpoint between batches, so no lock is held for long and a stopped run leaves nothing half done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from psycopg import sql

from appliance.packs.crm.jobs.claims import fenced, pool_of

if TYPE_CHECKING:

    from appliance.sdk import RunContext


@dataclass(frozen=True)
class Target:
    table: str
    column: str
    condition: str = "TRUE"
    retention: str = "activity"  # which retention applies: "calls" or "activity"


TARGETS = (
    Target("call_attempts", "started_at", retention="calls"),
    Target("calls", "finished_at", "status IN ('completed', 'failed', 'cancelled')", retention="calls"),
    Target("activity", "created_at"),
    Target("outbox", "created_at", "status IN ('recorded', 'sent', 'failed')"),
)


def run(ctx: RunContext) -> dict[str, int]:
    """The job; returns rows deleted per table."""
    at = ctx.clock.now()
    crm = ctx.config.crm
    days = {"calls": crm.call_retention_days, "activity": crm.activity_retention_days}
    deleted: dict[str, int] = {}
    with pool_of(ctx).connection() as conn:
        for target in TARGETS:
            cutoff = at - timedelta(days=days[target.retention])
            query = sql.SQL("DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {column} < %s AND "
                            "{condition} LIMIT %s FOR UPDATE SKIP LOCKED)").format(
                table=sql.Identifier(target.table), column=sql.Identifier(target.column),
                condition=sql.SQL(target.condition))
            count = 0
            while True:
                ctx.checkpoint()
                with fenced(conn, ctx):
                    batch = conn.execute(query, (cutoff, crm.cleanup_batch_size)).rowcount
                count += batch
                if batch < crm.cleanup_batch_size:
                    break
            deleted[target.table] = count
            ctx.processed(count)
        with fenced(conn, ctx, complete=True):
            pass  # the slot's completion, fenced: a takeover after a crash does not run it again
    ctx.log.info("deleted old rows: %s", deleted)
    return deleted
