"""One run's connection, its claim marker, and writes that only a run still holding its job may commit.

A run that sends (campaign recipients, reminders, calls) works on one connection for its whole length
(``run_session``) and holds a session-level advisory lock keyed by (job, fence) on it. Rows it claims carry
its fence (``claim_fence``). PostgreSQL drops the lock when that session ends for any reason — the run
finished, crashed, was killed with -9, or lost its connection — so a later run that can take the lock of a
row's fence knows the claim is an orphan and reconciles it (``orphaned_fences``). While the claiming run lives
its claims are left alone, even by a newer run after a lost lease.

Claims and results are written in ``fenced`` transactions: ``check_fence`` inside them rolls the transaction
back when a newer run of the job has started, so a run that lost its lease cannot commit.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

from appliance.packs.crm.channels import Channels, build_channels
from appliance.sdk import ApplianceError, RunContext, check_fence, complete_slot, one

_INT4 = 2**31


def lock_key(job: str, fence: int) -> tuple[int, int]:
    """The two int4 halves of the advisory lock marking ``job``'s run ``fence`` as alive."""
    return zlib.crc32(job.encode()) - _INT4, fence % _INT4


def pool_of(ctx: RunContext) -> ConnectionPool:
    """The run's PostgreSQL pool: every CRM job declares ``needs=("db",)``, so the worker gives it one."""
    if ctx.db is None:
        raise ApplianceError("the CRM jobs need PostgreSQL (DATABASE_URL)")
    return ctx.db


@contextmanager
def run_session(ctx: RunContext) -> Iterator[psycopg.Connection]:
    """A pooled connection in autocommit mode, marked as this run's for as long as the block lasts."""
    fence = ctx.fence  # issued first: issuing takes a pooled connection of its own
    with pool_of(ctx).connection() as conn:
        conn.autocommit = True
        # no server-side prepared statements: after five runs of a prepared statement PostgreSQL may switch
        # to a generic plan, and for the batch statements (arrays of a thousand ids) that plan is 15 times
        # slower than the one made for the actual values
        threshold, conn.prepare_threshold = conn.prepare_threshold, None
        conn.execute("SELECT pg_advisory_lock(%s, %s)", lock_key(ctx.job, fence))
        try:
            yield conn
        finally:
            conn.prepare_threshold = threshold
            if not conn.closed:
                try:
                    conn.execute("SELECT pg_advisory_unlock_all()")
                    conn.autocommit = False
                except psycopg.Error:
                    # the connection broke: the server ended the session and its locks with it
                    pass


@contextmanager
def run_resources(ctx: RunContext) -> Iterator[tuple[psycopg.Connection, Channels]]:
    """The run's session (``run_session``) and the channels it sends through, both closed when it ends."""
    channels = build_channels(ctx.config.crm, ctx.sleep, ctx.redis, ctx.clock)
    try:
        with run_session(ctx) as conn:
            yield conn, channels
    finally:
        channels.close()


@contextmanager
def fenced(conn: psycopg.Connection, ctx: RunContext, complete: bool = False) -> Iterator[psycopg.Connection]:
    """A transaction that commits only if ``ctx`` still holds the newest fence of its job (else ``LockLost``).

    ``complete``: the run's final transaction, which also marks its slot done (``complete_slot``), so the
    slot's effect commits exactly once even if the worker dies right after."""
    with conn.transaction():
        if complete:
            complete_slot(conn, ctx)
        else:
            check_fence(conn, ctx.job, ctx.fence)
        yield conn


def orphaned_fences(conn: psycopg.Connection, job: str, fences: Iterable[int]) -> list[int]:
    """The fences among ``fences`` whose runs are gone (no session holds their advisory lock any more)."""
    gone = []
    for fence in sorted(set(fences)):
        # a transaction-level try-lock: taken and released at once, it only tells whether the owner lives
        taken = one(conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", lock_key(job, fence)))[0]
        if taken:
            gone.append(fence)
    return gone
