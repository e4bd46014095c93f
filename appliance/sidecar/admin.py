"""The admin API under ``/api`` (seed 002's status, triggers, next run times and history; seed 003's queue UI).

Every route needs an admin credential (``appliance.sidecar.auth``); every change goes through
``ClusterState`` exactly as the CLI's does and is written to the audit trail (who, what, when) and the log.

A change (``POST``, ``DELETE``) reads its body before it does anything: empty, or a JSON object of at most
``MAX_BODY`` bytes holding the change's options (a trigger's ``params`` and ``slot``; a pause's ``reason``,
``until`` and ``on_resume``; a backfill's window). Anything else is answered 400 (malformed, not an object, an
unknown option, a malformed chunked body), 413 (too large) or 408 (stopped arriving) and changes nothing. The
changes go through ``appliance.kernel.protocol.actions``, as the CLI's do, and each writes its audit-log row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

import psycopg
from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import BadRequest

from appliance.kernel.contract.spec import EffectiveSpec
from appliance.kernel.protocol.actions import Actions
from appliance.kernel.protocol.ledger import read_history
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime.clients import PG_CONNECT_TIMEOUT
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.redaction import Redactor
from appliance.sidecar.auth import admin_surface, require_admin
from appliance.sidecar.body import read_body

log = logging.getLogger("appliance.sidecar.admin")

bp = Blueprint("admin_api", __name__, url_prefix="/api")
bp.before_request(admin_surface)

MAX_LIMIT = 1000
#: Slots a plan (``GET /api/jobs/NAME/plan?next=N``) lists at most.
MAX_PLAN = 1000
#: Largest body a change accepts. Admin calls carry at most a few options; a larger body is refused unread.
MAX_BODY = 64 * 1024
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def _state() -> ClusterState:
    return current_app.extensions["appliance"].state


def actions() -> Actions:
    """The operator actions for this request (the audit log written on a connection of its own)."""
    config = current_app.extensions["appliance"].config
    return Actions(_state(), lambda: psycopg.connect(config.core.database_url, connect_timeout=PG_CONNECT_TIMEOUT,
                                                      autocommit=True),
                   Redactor.from_config(config), config.core.clock_skew_warn)


def answered(acts: Actions, action: str, target: str, **body: Any) -> Response:
    """The JSON answer of a change, with ``warnings`` when its audit-log row could not be written; logged."""
    log.info("admin action", extra=fields(who=g.caller.who, action=action, target=target,
                                         at=iso(acts.state.clock.now())))
    return jsonify(**body, **({"warnings": acts.warnings} if acts.warnings else {}))


def options(*allowed: str) -> dict[str, Any]:
    """The change's body, every key one of ``allowed`` (400 naming the unknown ones)."""
    body: dict[str, Any] = g.get("body") or {}
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown option(s) {', '.join(unknown)}; this change takes: "
                         f"{', '.join(allowed) or 'none'}")
    return body


def text_option(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, not {value!r}")
    return value


def _limit(default: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, not {raw!r}")
    return int(raw)


def _next(default: int) -> int:
    """``?next=N``: how many slots a plan lists."""
    raw = request.args.get("next")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PLAN:
        raise BadRequest(f"next must be an integer from 1 to {MAX_PLAN}, not {raw!r}")
    return int(raw)


def _body() -> dict[str, Any]:
    """The body of a change: ``{}`` when empty, else the JSON object it holds (whatever its content type, so
    ``curl -d '{}'`` works). Raises 413, 408 or 400 before the change is made."""
    raw = read_body(MAX_BODY)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadRequest("the body must be empty or a JSON object; it is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be empty or a JSON object, not a JSON {type(value).__name__}")
    return value


def change(view: Callable[..., Any]) -> Callable[..., Any]:
    """An admin change: the caller is authenticated first (401 and 403 never depend on the body), then the
    body is read; only then does ``view`` run."""
    @wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        g.body = _body()
        return view(*args, **kwargs)

    return require_admin(checked)


def _flag(name: str) -> bool:
    raw = request.args.get(name, "").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise BadRequest(f"{name} must be true or false, not {raw!r}")


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/jobs")
@require_admin
def jobs() -> Response:
    """Jobs with schedule, next runs, last run, paused, running where, lock holder; plus live workers."""
    state = _state()
    return jsonify(jobs=[job.to_json() for job in state.jobs.views()],
                   workers=[worker.to_json() for worker in state.workers.live()])


@bp.get("/jobs/<name>/plan")
@require_admin
def plan(name: str) -> Response:
    """The job's next fire times as its workers will run them (``appliance schedule plan``), from the effective
    spec they publish: ``?next=N`` (default 10, at most 1000), ``?from=ISO`` (default now)."""
    state = _state()
    state.jobs.require(name)
    published = next(view.published for view in state.jobs.views() if view.name == name)
    if not published.spec:
        raise BadRequest(f"job {name!r} was published by a worker that does not publish its spec yet")
    count = _next(10)
    raw = request.args.get("from")
    try:
        after = datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else \
            current_app.extensions["appliance"].monitor.clock.now()
    except ValueError:
        raise BadRequest(f"from must be an ISO 8601 time, not {raw!r}") from None
    after = after if after.tzinfo else after.replace(tzinfo=UTC)
    spec = EffectiveSpec.from_json(dict(published.spec))
    return jsonify(job=name, spec_version=published.spec_version, spec_hash=spec.hash,
                   policy=spec.policy.columns(), schedule=spec.schedule.text, timezone=spec.schedule.tz.key,
                   slots=[slot.to_json() for slot in spec.plan(after, count)])


@bp.post("/jobs/<name>/trigger")
@change
def trigger(name: str) -> tuple[Response, int]:
    """``{"params": {...}, "slot": ISO, "reason": TEXT}``, all optional: the parameters are checked against the
    job's declaration (400); the reason goes to the audit log."""
    body = options("params", "slot", "reason")
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(f"params must be a JSON object of parameter names and values, not {params!r}")
    acts = actions()
    trigger_id = acts.trigger(g.caller.who, name, params, text_option(body, "slot"), why=text_option(body, "reason"))
    return answered(acts, "job.trigger", name, job=name, trigger_id=trigger_id), 202


def _pause(job: str | None) -> Any:
    body = options("reason", "until", "on_resume")
    acts = actions()
    pause = acts.pause(g.caller.who, job, text_option(body, "reason") or "", text_option(body, "until"),
                       text_option(body, "on_resume") or "skip")
    return acts, pause


@bp.post("/jobs/<name>/pause")
@change
def pause(name: str) -> Response:
    """``{"reason", "until" (ISO or 30m/2h), "on_resume" (skip, run_latest, catch_up:N)}``, all optional."""
    acts, paused = _pause(name)
    return answered(acts, "job.pause", name, job=name, paused=True, pause=paused.to_json())


@bp.post("/jobs/<name>/resume")
@change
def resume(name: str) -> Response:
    options()
    acts = actions()
    ended, queued = acts.resume(g.caller.who, name)
    return answered(acts, "job.resume", name, job=name, paused=False, ended=ended.to_json() if ended else None,
                    backfills=queued)


@bp.get("/scheduler")
@require_admin
def scheduler() -> Response:
    """Whether every job's slots are stopped (pause-all) and by whom; jobs paused one by one are in ``/jobs``."""
    pause = _state().pauses.paused_all()
    return jsonify(paused_all=pause is not None, paused_by=pause.by if pause else None,
                   paused_at=pause.at if pause else None, pause=pause.to_json() if pause else None)


@bp.get("/breakers")
@require_admin
def breakers() -> Response:
    """Every provider's circuit breaker: state, consecutive failures, when it opened, when it tries again."""
    return jsonify(breakers=[breaker.to_json() for breaker in _state().breakers.views()])


@bp.post("/pause-all")
@change
def pause_all() -> Response:
    """Stop every job cluster-wide (persisted); slots that come meanwhile are recorded ``paused``. Takes the
    options of a job's pause."""
    acts, pause = _pause(None)
    return answered(acts, "scheduler.pause-all", "*", paused_all=True, paused_by=pause.by, paused_at=pause.at,
                    pause=pause.to_json())


@bp.post("/resume-all")
@change
def resume_all() -> Response:
    """Every job goes on from its next slot; the pause's on-resume policy decides which paused slots run."""
    options()
    acts = actions()
    ended, queued = acts.resume(g.caller.who, None)
    return answered(acts, "scheduler.resume-all", "*", paused_all=False, paused_by=None, paused_at=None,
                    ended=ended.to_json() if ended else None, backfills=queued)


@bp.get("/history")
@require_admin
def history() -> Response:
    """The ledger's runs and unrun slots (PostgreSQL); Redis' recent runs while the database is down."""
    job = request.args.get("job") or None
    config = current_app.extensions["appliance"].config
    limit = _limit(config.sidecar.history_default)
    if job is not None:
        _state().jobs.require(job)
    try:
        with psycopg.connect(config.core.database_url, connect_timeout=PG_CONNECT_TIMEOUT, autocommit=True) as conn:
            return jsonify(job=job, source="ledger", runs=[entry.to_json() for entry in read_history(conn, job, limit)])
    except psycopg.Error:
        return jsonify(job=job, source="redis", runs=[run.to_json() for run in _state().history.runs(job, limit=limit)])


@bp.get("/locks")
@require_admin
def locks() -> Response:
    return jsonify(locks=[lease.to_json() for lease in _state().leases.held()])


@bp.delete("/locks/<name>")
@change
def clear_lock(name: str) -> Response:
    """Same safety as ``appliance locks clear``: 409 while the holder is alive unless ``?force=true``."""
    force = _flag("force")
    acts = actions()
    lease = acts.clear_lock(g.caller.who, name, force)
    return answered(acts, "lock.clear", name, cleared=lease.to_json())


@bp.get("/dead-letters")
@require_admin
def dead_letters() -> Response:
    return jsonify(dead_letters=[letter.to_json() for letter in _state().dead_letters.newest(limit=_limit(100))])


@bp.post("/dead-letters/<dead_id>/retry")
@change
def retry_dead_letter(dead_id: str) -> tuple[Response, int]:
    acts = actions()
    trigger_id = acts.retry_dead_letter(g.caller.who, dead_id)
    return answered(acts, "dlq.retry", dead_id, id=dead_id, trigger_id=trigger_id), 202


@bp.delete("/dead-letters/<dead_id>")
@change
def drop_dead_letter(dead_id: str) -> Response:
    acts = actions()
    letter = acts.drop_dead_letter(g.caller.who, dead_id)
    return answered(acts, "dlq.drop", dead_id, dropped=letter.to_json())


@bp.get("/audit")
@require_admin
def audit() -> Response:
    return jsonify(audit=[entry.to_json() for entry in _state().audit.newest(limit=_limit(100))])
