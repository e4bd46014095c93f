"""Fencing numbers issued by PostgreSQL, so they survive Redis restarts.

The runner issues a run's number when the run takes its lease, before the job body starts
(``appliance.kernel.protocol.ledger``), so ``ctx.fence`` is fixed for the whole run: a run that loses its lease
and reads it late still holds the old number. Inside the transaction of its final writes a job calls one of:

- ``complete_slot(conn, ctx)``: the slot's completion is written in that same transaction, so the effect
  is committed exactly once: a takeover after a crash finds the slot done in PostgreSQL even when Redis
  never heard of it. Raises ``LockLost`` (and the transaction must roll back) when a newer run took the
  job or the slot is done already.
- ``check_fence(conn, job, fence)``: only the fence check, for intermediate batches.

Both lock the job's fence row until the transaction ends, so a newer run's fence waits for the commit.
"""

from __future__ import annotations

from typing import Protocol

import psycopg

from appliance.errors import LockLost
from appliance.kernel.protocol.db.rows import one


class Run(Protocol):
    """What ``complete_slot`` needs of a ``RunContext``."""

    job: str
    run_id: str


def issue_fence(conn: psycopg.Connection, job: str) -> int:
    """The next fencing number of ``job`` (commits on its own when ``conn`` is in autocommit mode)."""
    row = one(conn.execute(
        "INSERT INTO job_fences (job, fence) VALUES (%s, 1) "
        "ON CONFLICT (job) DO UPDATE SET fence = job_fences.fence + 1, issued_at = now() RETURNING fence",
        (job,),
    ))
    return int(row[0])


def check_fence(conn: psycopg.Connection, job: str, fence: int) -> None:
    """Raise ``LockLost`` unless ``fence`` is still the newest number of ``job``.

    Call it inside the transaction that makes the run's final writes; it holds a share lock on the fence
    row until that transaction ends.
    """
    row = conn.execute("SELECT fence FROM job_fences WHERE job = %s FOR SHARE", (job,)).fetchone()
    current = int(row[0]) if row else None
    if current != fence and conn.execute(
            # overlap = allow: a run's fence is its own slot's newest, not the job's (migration 0006).
            "SELECT 1 FROM job_slot_fences WHERE job = %s AND fence = %s AND NOT done FOR SHARE",
            (job, fence)).fetchone() is None:
        raise LockLost(f"fence {fence} of {job} is stale (newest is {current}): a newer run holds the job")


def complete_slot(conn: psycopg.Connection, ctx: Run) -> None:
    """Mark ``ctx``'s slot done inside the caller's transaction (the job's final one), fenced.

    Raises ``LockLost`` unless this run still holds the newest fence of its job and its slot is not done
    yet; the caller's transaction must then roll back (``with conn.transaction():`` does it).
    """
    # appliance_complete_slot (migration 0008): a backfill run completes its historical slot, any other run as
    # appliance_complete does.
    (ok,) = one(conn.execute("SELECT appliance_complete_slot(%s)", (ctx.run_id,)))
    if not ok:
        raise LockLost(f"run {ctx.run_id} of {ctx.job} cannot complete its slot: a newer run holds the job "
                       "or the slot is done already")
