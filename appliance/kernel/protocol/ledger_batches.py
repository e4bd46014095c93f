"""The ledger's statements for many runs at once: every run of one instant opened, many runs' ends recorded,
each in one PostgreSQL statement (one round trip, one commit) instead of one per run.

Each row goes through the same SQL function as a run alone (``appliance_open_run``, ``appliance_finish_run``):
the fences, the reconciliation of what earlier holders left open and the slot rows are exactly theirs. The rows
are sent in job order, so two statements that lock several jobs' fence rows take them in the same order and
never deadlock one another; a statement is one transaction, so a failure writes none of its rows and every
caller treats it as it treats its own statement failing (the runs do not start; the ends are kept and written
again later).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import ConnectionPool

from appliance.kernel.protocol.ledger import CONNECT_WAIT, Started
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.runtime.json_object import JsonObject


@dataclass(frozen=True)
class Opening:
    """A scheduled slot's first attempt that holds its job's lease (``Ledger.open`` with a job-scope lease)."""

    job: str
    slot: datetime
    run_id: str
    owner: str
    worker: str
    started: datetime
    planned: datetime | None
    spec_version: int | None


@dataclass(frozen=True)
class Ending:
    """``Ledger.finish``'s arguments for a run that is not a backfill; ``job`` orders the rows."""

    job: str
    run_id: str
    outcome: Outcome
    slot_outcome: Outcome | None
    error: str | None
    processed: int
    summary: JsonObject | None
    duration_ms: float
    reason: str | None = None


def _job_order(jobs: list[str]) -> list[int]:
    return sorted(range(len(jobs)), key=lambda i: jobs[i])


def open_runs(pool: ConnectionPool, openings: list[Opening]) -> list[Started]:
    """Open every run of ``openings`` (fences issued) in one statement; answers in the order given."""
    order = _job_order([o.job for o in openings])
    rows = [openings[i] for i in order]
    with pool.connection(timeout=CONNECT_WAIT) as conn:
        answers = conn.execute(
            "SELECT o.o_fence, o.o_done FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], "
            "%s::text[], %s::timestamptz[], %s::timestamptz[], %s::integer[]) WITH ORDINALITY "
            "AS t(j, s, r, ow, w, st, p, v, n) "
            "CROSS JOIN LATERAL appliance_open_run(j, s, 'schedule', r, ow, w, 1, st, p, v, false) AS o ORDER BY t.n",
            ([o.job for o in rows], [o.slot for o in rows], [o.run_id for o in rows], [o.owner for o in rows],
             [o.worker for o in rows], [o.started for o in rows], [o.planned for o in rows],
             [o.spec_version for o in rows])).fetchall()
    if len(answers) != len(rows):
        raise RuntimeError(f"{len(rows)} runs opened, {len(answers)} answers")
    result: list[Started] = [Started(0, True)] * len(rows)
    for i, (fence, done) in zip(order, answers, strict=True):
        result[i] = Started(int(fence), bool(done))
    return result


def finish_runs(pool: ConnectionPool, endings: list[Ending]) -> list[Outcome]:
    """Record every end of ``endings`` in one statement; the outcomes recorded (a stale success is
    ``lease_lost``), in the order given."""
    order = _job_order([e.job for e in endings])
    rows = [endings[i] for i in order]
    with pool.connection(timeout=CONNECT_WAIT) as conn:
        answers = conn.execute(
            "SELECT appliance_finish_run(r, o, so, e, p, su::jsonb, d, re) FROM unnest(%s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::integer[], %s::text[], %s::float8[], %s::text[]) WITH ORDINALITY "
            "AS t(r, o, so, e, p, su, d, re, n) ORDER BY t.n",
            ([e.run_id for e in rows], [e.outcome.value for e in rows],
             [e.slot_outcome.value if e.slot_outcome else None for e in rows], [e.error for e in rows],
             [e.processed for e in rows], [None if e.summary is None else json.dumps(e.summary) for e in rows],
             [e.duration_ms for e in rows], [e.reason for e in rows])).fetchall()
    if len(answers) != len(rows):
        raise RuntimeError(f"{len(rows)} run ends, {len(answers)} answers")
    result: list[Outcome] = [Outcome.SUCCESS] * len(rows)
    for i, e, (recorded,) in zip(order, rows, answers, strict=True):
        result[i] = Outcome(recorded) if recorded else e.outcome
    return result
