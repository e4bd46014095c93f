"""The Flask application factory and the JSON error responses every route shares."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from flask import Flask, Response, jsonify
from flask.json.provider import DefaultJSONProvider
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from appliance.config import Config
from appliance.errors import Conflict, NotFound
from appliance.kernel.protocol.actions import Refused
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime import tracing
from appliance.kernel.runtime.clients import make_redis
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.redaction import Redactor
from appliance.sidecar.checks import failure
from appliance.sidecar.health import Monitor

log = logging.getLogger("appliance.sidecar")

#: Admin requests wait at most this long for Redis, so a hung Redis cannot pin every request thread.
ADMIN_REDIS_TIMEOUT = 2.0
#: Every textual body is masked: pages, JSON, Prometheus text and OpenMetrics alike.
MASKED_TYPES = ("application/json", "application/openmetrics-text")


@dataclass
class Sidecar:
    """What the routes share, kept in ``app.extensions["appliance"]``."""

    config: Config
    monitor: Monitor
    state: ClusterState
    metrics_dir: Path
    #: The Prometheus registry, built on the first scrape.
    registry: Any = None

    def close(self) -> None:
        self.monitor.close()
        self.state.client.close()


def create_app(config: Config, clock: Clock = SYSTEM, hostname: str | None = None) -> Flask:
    """The sidecar: health, metrics, admin API and dashboard for ``config``.

    ``clock`` is what heartbeats, the dead-man's switch, cached checks and the times the admin API writes
    are measured against (tests pass an ``appliance.kernel.runtime.clock.SteppedClock``); ``hostname``
    names the host whose worker heartbeat makes this sidecar healthy (default: this host).
    """
    # The routes import the Prometheus metrics, which must see the multiprocess directory the entry point sets.
    from appliance.sidecar import admin, dashboard, health, metrics, operations, seed_api, timeline

    config.core.metrics_dir.mkdir(parents=True, exist_ok=True)
    # In the process that serves: gunicorn calls this after its fork, where the exporter's thread lives on.
    tracing.start(config, "sidecar")
    # No app-wide static route: the dashboard blueprint serves its own files under its security headers.
    app = Flask(__name__, static_folder=None)
    if isinstance(app.json, DefaultJSONProvider):  # the provider Flask makes by default
        app.json.sort_keys = False
    app.extensions["appliance"] = Sidecar(
        config=config,
        monitor=Monitor(config, clock=clock, hostname=hostname),
        state=ClusterState(make_redis(config.core.redis_url, timeout=ADMIN_REDIS_TIMEOUT), clock),
        metrics_dir=config.core.metrics_dir,
    )
    for blueprint in (health.bp, metrics.bp, admin.bp, operations.bp, seed_api.bp, timeline.bp, dashboard.bp):
        app.register_blueprint(blueprint)
    _register_errors(app)
    tracing.instrument_flask(app)
    redactor = Redactor.from_config(config)

    @app.after_request
    def _mask(response: Response) -> Response:
        # Run records, dead letters and error messages come from jobs; a job may have put a secret in them.
        if not response.direct_passthrough and _textual(response.mimetype or ""):
            text = response.get_data(as_text=True)
            clean = redactor.text(text)
            if clean != text:
                response.set_data(clean)
        headers = [(name, redactor.text(value)) for name, value in response.headers.items()]
        if headers != list(response.headers.items()):
            response.headers = Headers(headers)
        return response

    return app


def _textual(mimetype: str) -> bool:
    return mimetype.startswith("text/") or mimetype in MASKED_TYPES


def _error(status: int, error: str, message: str) -> tuple[Response, int]:
    return jsonify(error=error, message=message, status=status), status


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> BaseResponse:
        response = exc.get_response()
        body, _ = _error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                         exc.description or "")
        response.set_data(body.get_data())
        response.content_type = "application/json"
        return response

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound) -> tuple[Response, int]:
        return _error(404, "not_found", str(exc))

    @app.errorhandler(Conflict)
    def conflict(exc: Conflict) -> tuple[Response, int]:
        return _error(409, "conflict", str(exc))

    @app.errorhandler(Refused)
    def refused(exc: Refused) -> tuple[Response, int]:
        return _error(400, "bad_request", str(exc))

    @app.errorhandler(psycopg.Error)
    def database_down(exc: psycopg.Error) -> tuple[Response, int]:
        log.warning("PostgreSQL unavailable: %s", failure(exc))
        return _error(503, "service_unavailable", "PostgreSQL is unavailable; try again shortly")

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> tuple[Response, int]:
        log.warning("Redis unavailable: %s", failure(exc))
        return _error(503, "service_unavailable", "Redis is unavailable; try again shortly")

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> tuple[Response, int]:
        # One line, no traceback: the error and where it was raised are enough to find it, and a traceback's
        # local values could carry a secret past the redactor.
        log.error("unhandled error: %s at %s", failure(exc), _origin(exc))
        return _error(500, "internal_error", "internal error; the sidecar log has the details")


def _origin(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame of ``exc``'s traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown location"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"
