"""Who may use the admin API and the dashboard.

``Authorization: Bearer <credential>`` where the credential is either ``ADMIN_TOKEN`` (compared in constant
time; an empty configured token never matches) or, when ``JWT_SECRET`` is set, an HS256 JWT whose ``role``
claim is ``admin`` (or whose ``roles`` claim lists it). With neither configured the admin surface does not
exist: every admin URL answers 404, so a forgotten setting never leaves job control open.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import jwt
from flask import abort, current_app, g, request
from jwt.types import Options
from werkzeug.exceptions import Forbidden, Unauthorized

from appliance.config.sidecar import SidecarConfig

ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class Caller:
    """An authenticated admin; ``who`` is what the audit trail records."""

    who: str
    method: str


class BearerRequired(Unauthorized):
    """401 with the ``WWW-Authenticate`` header RFC 6750 asks for."""

    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope), ("WWW-Authenticate", 'Bearer realm="appliance"')]


def _bearer(header: str | None) -> str:
    scheme, _, credential = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise BearerRequired("send 'Authorization: Bearer <ADMIN_TOKEN or JWT>'")
    return credential.strip()


def authenticate(config: SidecarConfig, header: str | None) -> Caller:
    """The caller named by an ``Authorization`` header; raises 401 (no or bad credential) or 403 (not admin)."""
    credential = _bearer(header)
    if config.admin_token and hmac.compare_digest(credential.encode(), config.admin_token.encode()):
        return Caller(who="admin-token", method="token")
    if config.jwt_secret and credential.count(".") == 2:
        return Caller(who=_jwt_subject(config, credential), method="jwt")
    raise BearerRequired("invalid credential")


def _jwt_subject(config: SidecarConfig, credential: str) -> str:
    options: Options = {"require": ["exp"], "verify_aud": bool(config.jwt_audience)}
    try:
        claims = jwt.decode(credential, config.jwt_secret, algorithms=["HS256"], options=options,
                            audience=config.jwt_audience or None, issuer=config.jwt_issuer or None, leeway=5)
    except jwt.ExpiredSignatureError:
        raise BearerRequired("the JWT has expired") from None
    except jwt.InvalidTokenError:
        raise BearerRequired("invalid JWT") from None
    roles = claims.get("roles")
    roles = roles if isinstance(roles, list) else []
    if claims.get("role") != ADMIN_ROLE and ADMIN_ROLE not in roles:
        raise Forbidden(f"the JWT does not carry the {ADMIN_ROLE!r} role")
    subject = claims.get("sub")
    return f"jwt:{subject}" if isinstance(subject, str) and subject else "jwt"


def admin_surface() -> None:
    """404 for every admin URL when no credential is configured (``before_request`` of admin blueprints)."""
    if not current_app.extensions["appliance"].config.sidecar.admin_enabled:
        abort(404)


def require_admin(view: Callable) -> Callable:
    """Decorator: authenticate the request; the caller is in ``g.caller``."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.caller = authenticate(current_app.extensions["appliance"].config.sidecar,
                                request.headers.get("Authorization"))
        return view(*args, **kwargs)

    return wrapper
