"""What the dashboard draws, read from the slot ledger in PostgreSQL (``job_slots``, ``job_runs``), read-only.

- ``GET /api/timeline?hours=N``: per job, every slot of the last N hours (default 6, at most 48) with its
  outcome, and every run with its start, duration and items processed. A slot that has no row is a gap.
- ``GET /api/runs/RUN_ID``: one run, the other attempts of its slot, and, when it ended as a dead letter,
  the traceback kept with it (masked like every answer).

Each request opens its own short connection (as the health check does): the dashboard asks every few
seconds, and a pool would keep connections open in every gunicorn process for a page nobody may be watching.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, NotFound, ServiceUnavailable

from appliance.kernel.protocol.owner import iso
from appliance.sidecar.auth import admin_surface, require_admin

bp = Blueprint("timeline", __name__, url_prefix="/api")
bp.before_request(admin_surface)

DEFAULT_HOURS, MAX_HOURS = 6, 48
#: Marks kept per job (the newest); a 30 s job has 720 slots in 6 hours, a 1 s job would have 21,600.
MAX_MARKS = 1500
CONNECT_TIMEOUT = 2

#: Each job's newest slots (and runs) of the window, read from its own index range (the primary key (job, slot),
#: job_runs_job_started): the cost is the marks returned, not the window's rows of every job (a 1 s job has 172,800
#: in 48 hours). The jobs are found by skipping from one to the next along the same index.
_JOBS = """
WITH RECURSIVE jobs AS (
    (SELECT job FROM {table} ORDER BY job LIMIT 1)
    UNION ALL
    SELECT (SELECT t.job FROM {table} t WHERE t.job > jobs.job ORDER BY t.job LIMIT 1) FROM jobs
    WHERE jobs.job IS NOT NULL)"""
_SLOTS = _JOBS.format(table="job_slots") + """
SELECT jobs.job, s.slot, s.outcome, s.run_id, s.reason FROM jobs CROSS JOIN LATERAL (
    SELECT slot, outcome, run_id, reason FROM job_slots
    WHERE job = jobs.job AND slot >= %(since)s AND slot <= %(until)s ORDER BY slot DESC LIMIT %(limit)s) AS s
ORDER BY jobs.job, s.slot"""
_RUNS = _JOBS.format(table="job_runs") + """
SELECT jobs.job, r.run_id, r.slot, r.trigger, r.attempt, r.started_at, r.duration_ms, r.processed, r.outcome
FROM jobs CROSS JOIN LATERAL (
    SELECT run_id, slot, trigger, attempt, started_at, duration_ms, processed, outcome FROM job_runs
    WHERE job = jobs.job AND started_at >= %(since)s AND started_at <= %(until)s
    ORDER BY started_at DESC LIMIT %(limit)s) AS r
ORDER BY jobs.job, r.started_at"""
_RUN_COLUMNS = ("run_id, job, slot, trigger, attempt, fence, worker, owner, started_at, finished_at, duration_ms, "
                "outcome, processed, error, summary, reason")


def _connect() -> psycopg.Connection:
    url = current_app.extensions["appliance"].config.core.database_url
    try:
        # jit off: on a large ledger the planner's estimates pass jit_above_cost, and compiling the timeline's
        # index ranges took longer than reading them (91 of 106 ms at 50 million rows).
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True,
                               application_name="appliance-dashboard", options="-c jit=off")
    except psycopg.Error as exc:
        raise ServiceUnavailable("PostgreSQL is unavailable, so the ledger cannot be read; try again shortly") \
            from exc


def _rows(conn: psycopg.Connection, query: str, params: Any) -> list[dict[str, Any]]:
    cursor = conn.execute(query, params)
    names = [c.name for c in cursor.description or ()]
    return [{name: _plain(value) for name, value in zip(names, row, strict=True)} for row in cursor.fetchall()]


def _plain(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


def _hours() -> int:
    raw = request.args.get("hours", str(DEFAULT_HOURS))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_HOURS:
        raise BadRequest(f"hours must be an integer from 1 to {MAX_HOURS}, not {raw!r}")
    return int(raw)


@bp.get("/timeline")
@require_admin
def timeline() -> Response:
    until = current_app.extensions["appliance"].monitor.clock.now()
    since = until - timedelta(hours=_hours())
    params = {"since": since, "until": until, "limit": MAX_MARKS}
    with _connect() as conn:
        slots, runs = _rows(conn, _SLOTS, params), _rows(conn, _RUNS, params)
    jobs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for slot in slots:
        jobs.setdefault(slot.pop("job"), {"slots": [], "runs": []})["slots"].append(slot)
    for run in runs:
        jobs.setdefault(run.pop("job"), {"slots": [], "runs": []})["runs"].append(run)
    return jsonify(since=iso(since), until=iso(until), jobs=jobs)


@bp.get("/runs/<run_id>")
@require_admin
def run(run_id: str) -> Response:
    """The run, every attempt of its slot (oldest first) and the dead letter's traceback if it has one."""
    with _connect() as conn:
        found = _rows(conn, f"SELECT {_RUN_COLUMNS} FROM job_runs WHERE run_id = %s", (run_id,))
        if not found:
            raise NotFound(f"no run with id {run_id!r} in the ledger")
        attempts = _rows(conn, f"SELECT {_RUN_COLUMNS} FROM job_runs WHERE job = %s AND slot = %s AND trigger = %s "
                               "ORDER BY attempt, started_at", (found[0]["job"], found[0]["slot"],
                                                                 found[0]["trigger"]))
    return jsonify(run=found[0], attempts=attempts, traceback=_traceback(run_id))


def _traceback(run_id: str) -> str | None:
    """Tracebacks are kept only with dead letters (in Redis); the ledger has the error line of every run."""
    for letter in current_app.extensions["appliance"].state.dead_letters.newest(limit=1000):
        if letter.run_id == run_id:
            return letter.traceback
    return None
