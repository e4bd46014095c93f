"""Seed 002's scheduler API under ``/api/v1/scheduler``: thin aliases of the admin API in the seed's envelope.

Clients written against seed 002 keep working: each path answers ``{"success": true, "data": ...}`` where
``data`` is what the admin route it stands for answers (``status`` and ``next-sync-times`` shape the same
cluster state in the seed's words). Authentication, body checks, the audit trail and errors are the admin
API's own (errors keep its ``{"error", "message", "status"}`` body).

| seed path | stands for |
| --- | --- |
| ``GET status`` | ``/api/scheduler`` and ``/api/jobs`` in the seed's shape |
| ``POST start``, ``POST stop`` | ``/api/resume-all``, ``/api/pause-all`` |
| ``POST trigger/NAME`` | ``/api/jobs/NAME/trigger`` |
| ``GET next-sync-times`` | the next run times of ``/api/jobs`` |
| ``GET history`` | ``/api/history`` |
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.runs import RunRecord
from appliance.sidecar import admin
from appliance.sidecar.auth import admin_surface, require_admin

bp = Blueprint("seed_api", __name__, url_prefix="/api/v1/scheduler")
bp.before_request(admin_surface)


def _state() -> ClusterState:
    return current_app.extensions["appliance"].state


def _envelope(answer: Response | tuple[Response, int]) -> tuple[Response, int]:
    response, status = answer if isinstance(answer, tuple) else (answer, answer.status_code)
    return jsonify(success=True, data=response.get_json()), status


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/status")
@require_admin
def status() -> tuple[Response, int]:
    state = _state()
    pause, jobs, workers = state.pauses.paused_all(), state.jobs.views(), state.workers.live()
    started = min((w.beat.started for w in workers if w.beat.started), default=None)
    data: dict[str, Any] = {
        "status": "stopped" if pause else "running",
        "isRunning": pause is None and bool(workers),
        "startedAt": started,
        "stoppedBy": pause.by if pause else None,
        "stoppedAt": pause.at if pause else None,
        "activeJobs": [j.name for j in jobs if j.published.enabled and not j.paused and pause is None],
        "lastSyncs": {j.name: _last_sync(j.last_run) for j in jobs},
    }
    return jsonify(success=True, data=data), 200


def _last_sync(run: RunRecord | None) -> dict[str, Any] | None:
    """Seed 002's words for a job's last run."""
    if run is None:
        return None
    return {"lastStart": run.started, "lastEnd": run.finished, "outcome": run.outcome, "lastResults": run.summary}


@bp.post("/start")
def start() -> tuple[Response, int]:
    return _envelope(admin.resume_all())


@bp.post("/stop")
def stop() -> tuple[Response, int]:
    return _envelope(admin.pause_all())


@bp.post("/trigger/<name>")
def trigger(name: str) -> tuple[Response, int]:
    return _envelope(admin.trigger(name))


@bp.get("/next-sync-times")
@require_admin
def next_sync_times() -> tuple[Response, int]:
    paused_all = _state().pauses.paused_all() is not None
    data = {j.name: {"next": None if paused_all or j.paused else j.next_run,
                     "schedule": j.published.describe or j.published.schedule, "paused": paused_all or j.paused}
            for j in _state().jobs.views()}
    return jsonify(success=True, data=data), 200


@bp.get("/history")
def history() -> tuple[Response, int]:
    return _envelope(admin.history())
