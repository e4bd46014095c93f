"""The job the fault tests run (through ``APPLIANCE_JOBS_FILE``): an effect committed exactly once per slot.

``effect`` records each step in PostgreSQL (``fault_marks``), so a test can kill -9 or SIGSTOP the worker at
a chosen step, and writes its effect (a ``fault_effects`` row, with no unique constraint: a second effect for
one slot would show) in its final transaction together with ``complete_slot``. It reads ``ctx.fence`` only in
that final transaction, as a job may. It never calls ``ctx.checkpoint()``: the worst case for the worker.

Behaviour per worker process, from its environment: ``FAULT_WORK`` seconds of work before the final
transaction (default 0.2); ``FAULT_BLOCK=before_commit|after_commit`` sleeps a minute at that step, for the
test to kill the process there (``first_run``: before the commit of the cluster's first run only, so that the
worker which took it can be killed there while the others, and their takeover of it, run as usual);
``FAULT_LINGER`` seconds after the commit before the job returns;
``FAULT_FAIL=1`` makes every run fail before its final transaction.

``steady`` is the job that does keep its checkpoints: ``FAULT_WORK`` seconds in steps of 0.1 s (``ctx.sleep``),
each noted with the wall time in the file ``FAULT_TRACE`` (every worker of a test runs on this machine, so on
one clock), then the same final transaction as ``effect``. ``FAULT_FIRST_WORK``, when set, is the work of the
cluster's first run instead (the one that finds ``FAULT_TRACE`` not yet written).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from appliance.kernel.protocol.fencing import complete_slot

SCHEMA = """
CREATE TABLE IF NOT EXISTS fault_effects (job text, slot timestamptz, run_id text, fence bigint, pid int,
                                          at timestamptz DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS fault_marks (job text, slot timestamptz, run_id text, pid int, step text,
                                        at timestamptz DEFAULT clock_timestamp());
"""


def _mark(ctx, step: str) -> None:
    with ctx.db.connection() as conn:
        conn.execute("INSERT INTO fault_marks (job, slot, run_id, pid, step) VALUES (%s, %s, %s, %s, %s)",
                     (ctx.job, ctx.slot, ctx.run_id, os.getpid(), step))


def _first_run(ctx) -> bool:
    """Whether this run's ``started`` mark is the only one so far."""
    with ctx.db.connection() as conn:
        return conn.execute("SELECT count(*) FROM fault_marks WHERE step = 'started'").fetchone()[0] == 1


def effect(ctx) -> dict:
    _mark(ctx, "started")
    block = os.environ.get("FAULT_BLOCK", "")
    if block == "before_commit" or (block == "first_run" and _first_run(ctx)):
        time.sleep(60)
    time.sleep(float(os.environ.get("FAULT_WORK", "0.2")))
    if os.environ.get("FAULT_FAIL") == "1":
        raise RuntimeError("failing as told (FAULT_FAIL=1)")
    with ctx.db.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO fault_effects (job, slot, run_id, fence, pid) VALUES (%s, %s, %s, %s, %s)",
                     (ctx.job, ctx.slot, ctx.run_id, ctx.fence, os.getpid()))
        complete_slot(conn, ctx)
    _mark(ctx, "committed")
    if block == "after_commit":
        time.sleep(60)
    time.sleep(float(os.environ.get("FAULT_LINGER", "0")))
    return {"fence": ctx.fence}


def _note(ctx, event: str) -> None:
    line = f"{ctx.slot.isoformat()} {ctx.run_id} {os.getpid()} {event} {time.time():.6f}\n"
    with Path(os.environ["FAULT_TRACE"]).open("a") as trace:
        trace.write(line)


def steady(ctx) -> dict:
    work = os.environ.get("FAULT_WORK", "0.2")
    if not Path(os.environ["FAULT_TRACE"]).exists():
        work = os.environ.get("FAULT_FIRST_WORK", work)
    _note(ctx, "start")
    try:
        for _ in range(round(float(work) / 0.1)):
            ctx.sleep(0.1)
            _note(ctx, "step")
        with ctx.db.connection() as conn, conn.transaction():
            conn.execute("INSERT INTO fault_effects (job, slot, run_id, fence, pid) VALUES (%s, %s, %s, %s, %s)",
                         (ctx.job, ctx.slot, ctx.run_id, ctx.fence, os.getpid()))
            complete_slot(conn, ctx)
    finally:
        _note(ctx, "stop")
    return {"fence": ctx.fence}
