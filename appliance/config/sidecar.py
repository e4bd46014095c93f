"""Settings of the sidecar: admin authentication, health thresholds and the gunicorn server."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from appliance.config.env import EnvReader

#: A dependency check may never take longer than this, so ``/health`` answers within 1.5 s.
MAX_CHECK_TIMEOUT = 1.0
_FREE_SPACE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


@dataclass(frozen=True)
class FreeSpace:
    """An amount of free space: a share of the filesystem's size (``percent``) or a number of bytes."""

    percent: float | None = None
    bytes: int = 0
    #: As the operator wrote it (``check-config`` shows this).
    text: str = field(default="", compare=False)

    def describe(self) -> str:
        return self.text

    def of(self, total: int) -> int:
        """The amount in bytes on a filesystem of ``total`` bytes."""
        return round(total * self.percent / 100) if self.percent is not None else self.bytes

    @classmethod
    def parse(cls, text: str) -> FreeSpace:
        match = _FREE_SPACE.match(text)
        if not match:
            raise ValueError(text)
        number, unit = float(match.group(1)), (match.group(2) or "b").lower()
        if unit == "%":
            if number > 100:
                raise ValueError(text)
            return cls(percent=number, text=text.strip())
        return cls(bytes=round(number * _UNIT_BYTES[unit]), text=text.strip())


#: ``/health`` is degraded below this much free space on APPLIANCE_HOME's filesystem, by default.
DISK_FREE_WARN = FreeSpace(percent=5.0, text="5%")


@dataclass(frozen=True)
class SidecarConfig:
    admin_token: str
    jwt_secret: str
    jwt_audience: str
    jwt_issuer: str
    #: Dead-man's switch: a job that has not succeeded within ``stale_factor`` x its period is stale.
    stale_factor: float
    #: Hard limit of one dependency check (Redis, PostgreSQL, Qdrant), at most ``MAX_CHECK_TIMEOUT``.
    check_timeout: float
    #: How long a check's result is reused before the dependency is asked again.
    cache_ttl: float
    #: Runs returned by ``/api/history`` without ``limit`` (and shown by the dashboard).
    history_default: int
    #: gunicorn worker processes and threads per worker. A client that stalls mid-request holds a thread for up
    #: to 2 s (appliance.sidecar.slow_clients): threads are cheap while they wait, so there are enough of them
    #: that a few such clients leave the probes theirs.
    workers: int
    threads: int
    #: Seconds between refreshes of the dashboard.
    dashboard_refresh: float
    #: ``/health`` is degraded while APPLIANCE_HOME's filesystem has less free space than this.
    disk_free_warn: FreeSpace = DISK_FREE_WARN

    @property
    def admin_enabled(self) -> bool:
        """The admin API and dashboard exist only when some credential is configured."""
        return bool(self.admin_token or self.jwt_secret)


def load_sidecar(env: EnvReader) -> SidecarConfig:
    jwt_secret = env.secret("JWT_SECRET")
    if jwt_secret and len(jwt_secret) < 32:
        env.problem("JWT_SECRET", jwt_secret, "at least 32 characters (HS256 keys shorter than the hash are weak)",
                    secret=True)
    return SidecarConfig(
        admin_token=env.secret("ADMIN_TOKEN"),
        jwt_secret=jwt_secret,
        jwt_audience=env.str("JWT_AUDIENCE", ""),
        jwt_issuer=env.str("JWT_ISSUER", ""),
        stale_factor=env.float("HEALTH_STALE_FACTOR", 3.0, min=1.0, max=1000.0),
        check_timeout=_check_timeout(env),
        cache_ttl=env.duration("HEALTH_CACHE_TTL", 1.0, unit="s", min=0.0),
        history_default=env.int("SIDECAR_HISTORY_LIMIT", 50, min=1, max=1000),
        workers=env.int("SIDECAR_WORKERS", 2, min=1, max=32),
        threads=env.int("SIDECAR_THREADS", 16, min=1, max=64),
        dashboard_refresh=env.duration("DASHBOARD_REFRESH", 5.0, unit="s", min=1.0),
        disk_free_warn=env.typed("DISK_FREE_WARN", DISK_FREE_WARN, FreeSpace.parse,
                                 "a share of the disk like 5% or an amount like 500MB, 2GiB (0: never)"),
    )


def _check_timeout(env: EnvReader) -> float:
    value = env.duration("HEALTH_CHECK_TIMEOUT", 0.8, unit="s", min=0.05)
    if value > MAX_CHECK_TIMEOUT:
        env.problem("HEALTH_CHECK_TIMEOUT", env.raw("HEALTH_CHECK_TIMEOUT"),
                    f"at most {MAX_CHECK_TIMEOUT:g}s (probes must answer within 1.5 s)")
        return 0.8
    return value
