"""Fencing numbers issued by PostgreSQL, so they survive Redis restarts.

A run takes ``issue_fence`` when it starts. Before its final writes, inside the same transaction as those
writes, it calls ``check_fence``: the row lock taken there makes a newer run's ``issue_fence`` wait until
this transaction ends, and if a newer number was issued already (this run's lease was lost and another run
started) it raises ``LockLost`` so the transaction rolls back and nothing is committed.
"""

from __future__ import annotations

import psycopg

from appliance.errors import LockLost


def issue_fence(conn: psycopg.Connection, job: str) -> int:
    """The next fencing number of ``job`` (commits on its own when ``conn`` is in autocommit mode)."""
    row = conn.execute(
        "INSERT INTO job_fences (job, fence) VALUES (%s, 1) "
        "ON CONFLICT (job) DO UPDATE SET fence = job_fences.fence + 1, issued_at = now() RETURNING fence",
        (job,),
    ).fetchone()
    return int(row[0])


def check_fence(conn: psycopg.Connection, job: str, fence: int) -> None:
    """Raise ``LockLost`` unless ``fence`` is still the newest number of ``job``.

    Call it inside the transaction that makes the run's final writes; it holds a share lock on the fence
    row until that transaction ends.
    """
    row = conn.execute("SELECT fence FROM job_fences WHERE job = %s FOR SHARE", (job,)).fetchone()
    current = int(row[0]) if row else None
    if current != fence:
        raise LockLost(f"fence {fence} of {job} is stale (newest is {current}): a newer run holds the job")
