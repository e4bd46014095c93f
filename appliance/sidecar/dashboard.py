"""``/admin``: the dashboard (seed 002's "Admin Dashboard", seed 003's queue UI).

The page is rendered by the server without data; its script asks for the admin credential once, keeps it in
``sessionStorage`` (this tab only), and fills and refreshes the tables from the admin API. ``charts.js`` draws
the pictures (a timeline of slots per job, run durations and items processed, lock state) as SVG built with
DOM calls, from the ledger (``appliance.sidecar.timeline``): no chart library, no build step. A strict Content
Security Policy allows only our own script and style, and every value is inserted as text, so a job's error
message can never run as code in the browser.
"""

from __future__ import annotations

import socket

from flask import Blueprint, Response, current_app, render_template

from appliance import __version__
from appliance.sidecar.auth import admin_surface
from appliance.sidecar.timeline import DEFAULT_HOURS

bp = Blueprint("dashboard", __name__, url_prefix="/admin", template_folder="templates", static_folder="static",
               static_url_path="/static")
bp.before_request(admin_surface)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.get("")
@bp.get("/")
def page() -> str:
    config = current_app.extensions["appliance"].config
    return render_template("dashboard.html", version=__version__, host=socket.gethostname(),
                           refresh_ms=int(config.sidecar.dashboard_refresh * 1000),
                           history_limit=config.sidecar.history_default, timeline_hours=DEFAULT_HOURS)
