"""Admin routes of the operator actions that live in PostgreSQL: backfills and the audit log.

- ``POST /api/jobs/NAME/backfill`` with ``{"from", "to", "only", "max_parallel", "dry_run", "force", "reason"}``:
  the plan (will run, will not, why); with ``dry_run`` nothing else (200), else it is started (202, ``backfill``);
- ``GET /api/backfills/ID``: its progress, slots by state and outcome, complete or not;
- ``GET /api/audit-log?since=24h&job=NAME&limit=N``: who changed what, newest first.

Same credential, body rules and JSON errors as ``appliance.sidecar.admin``; bad input is 400 naming the problem.
"""

from __future__ import annotations

from typing import Any

import psycopg
from flask import Blueprint, Response, abort, current_app, g, jsonify, request
from werkzeug.exceptions import BadRequest

from appliance.kernel.protocol import audit_log
from appliance.kernel.protocol.audit import shared_now
from appliance.kernel.runtime.clients import PG_CONNECT_TIMEOUT
from appliance.sidecar.admin import _limit, actions, answered, change, options, text_option
from appliance.sidecar.auth import admin_surface, require_admin

bp = Blueprint("operations_api", __name__, url_prefix="/api")
bp.before_request(admin_surface)


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _flag_option(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, not {value!r}")
    return value


@bp.post("/jobs/<name>/backfill")
@change
def backfill(name: str) -> tuple[Response, int]:
    body = options("from", "to", "only", "max_parallel", "dry_run", "force", "reason")
    since, until = text_option(body, "from"), text_option(body, "to")
    if not since or not until:
        raise BadRequest("from and to (ISO 8601 times) are required")
    parallel = body.get("max_parallel", 1)
    if not isinstance(parallel, int) or isinstance(parallel, bool):
        raise BadRequest(f"max_parallel must be an integer, not {parallel!r}")
    dry_run, force = _flag_option(body, "dry_run"), _flag_option(body, "force")
    acts = actions()
    plan = acts.plan_backfill(name, since, until, text_option(body, "only") or "missing", parallel, force)
    if dry_run:
        return jsonify(plan=plan.to_json(), backfill=None, dry_run=True), 200
    ident = acts.start_backfill(g.caller.who, plan, text_option(body, "reason"))
    return answered(acts, "job.backfill", name, plan=plan.to_json(), backfill=ident, dry_run=False), 202


@bp.get("/backfills/<ident>")
@require_admin
def backfill_progress(ident: str) -> Response:
    progress = actions().backfill_progress(ident)
    if progress is None:
        abort(404, f"no backfill with id {ident!r}")
    return jsonify(progress.to_json())


@bp.get("/audit-log")
@require_admin
def audit_log_rows() -> Response:
    """Who changed what (PostgreSQL); ``since``: a duration ago or an ISO time (default 7d)."""
    config = current_app.extensions["appliance"].config
    try:
        since = audit_log.parse_since(request.args.get("since", "7d"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    job = request.args.get("job") or None
    with psycopg.connect(config.core.database_url, connect_timeout=PG_CONNECT_TIMEOUT, autocommit=True) as conn:
        rows = audit_log.read(conn, since(shared_now(conn)), _limit(100), job)
    return jsonify(audit_log=[row.to_json() for row in rows])
