"""Builders of the clients that entry points create once and pass in (Redis, PostgreSQL pool)."""

from __future__ import annotations

import time
from typing import Callable

import psycopg
import redis
from psycopg_pool import ConnectionPool

from appliance.config import Config, redact_url

REDIS_SOCKET_TIMEOUT = 5.0
REDIS_CONNECT_TIMEOUT = 2.0
PG_CONNECT_TIMEOUT = 3


def make_redis(url: str, timeout: float = REDIS_SOCKET_TIMEOUT) -> redis.Redis:
    """A Redis client returning ``str``; short timeouts so an outage fails fast instead of hanging a run."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=min(REDIS_CONNECT_TIMEOUT, timeout),
        health_check_interval=30,
    )


def make_pool(config: Config, max_size: int | None = None, name: str = "appliance") -> ConnectionPool:
    """A psycopg pool, not yet opened (so a missing database does not stop the worker from starting)."""
    size = max_size or config.core.worker_threads + 2
    return ConnectionPool(
        config.core.database_url,
        min_size=1,
        max_size=size,
        open=False,
        name=name,
        timeout=5.0,
        kwargs={"connect_timeout": PG_CONNECT_TIMEOUT, "autocommit": False, "application_name": name},
    )


def connect_db(config: Config, autocommit: bool = True) -> psycopg.Connection:
    """One direct connection, for the CLI and migrations."""
    return psycopg.connect(config.core.database_url, connect_timeout=PG_CONNECT_TIMEOUT, autocommit=autocommit)


def wait_for(name: str, probe: Callable[[], object], timeout: float, log, interval: float = 0.5) -> bool:
    """Call ``probe`` until it returns without raising or ``timeout`` passes; log each wait once per kind."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            probe()
            if last_error:
                log.info("%s is up", name)
            return True
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means "not up yet"
            error = redact_url(f"{type(exc).__name__}: {exc}")
            if error != last_error:
                log.warning("waiting for %s: %s", name, error)
                last_error = error
        if time.monotonic() >= deadline:
            log.error("%s still down after %.0fs", name, timeout)
            return False
        time.sleep(interval)
