"""Builders of the clients that entry points create once and pass in (Redis, PostgreSQL pool).

Every Redis client of the appliance comes from ``make_redis``, so TLS verification and Sentinel apply to the
worker, the sidecar, the CLI and the control listener alike. PostgreSQL's TLS settings travel in the URL
(``sslmode``, ``sslrootcert``), which libpq applies itself.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, TypedDict

import psycopg
import redis
from psycopg_pool import ConnectionPool
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.maint_notifications import MaintNotificationsConfig
from redis.sentinel import Sentinel, SentinelConnectionPool

from appliance.config import Config, redact_url
from appliance.config.connections import SentinelTarget, is_sentinel, parse_sentinel_url
from appliance.errors import UntrustedService
from appliance.kernel.runtime.clock import SYSTEM, Clock

REDIS_SOCKET_TIMEOUT = 5.0
REDIS_CONNECT_TIMEOUT = 2.0
PG_CONNECT_TIMEOUT = 3


class RedisOptions(TypedDict, total=False):
    """The settings every Redis client of the appliance is made with (redis-py's keyword arguments); all but
    ``max_connections`` always set."""

    decode_responses: bool
    socket_timeout: float
    socket_connect_timeout: float
    health_check_interval: int
    driver_info: None
    maint_notifications_config: MaintNotificationsConfig
    max_connections: int


#: libpq's words for a server certificate it refused (psycopg passes libpq's message on unchanged).
_PG_REFUSED = ("certificate verify failed", "does not match host name", "root certificate file")


def make_redis(url: str, timeout: float = REDIS_SOCKET_TIMEOUT, connections: int | None = None) -> redis.Redis:
    """A Redis client returning ``str``; short timeouts so an outage fails fast instead of hanging a run.
    ``connections``: the most its pool opens (redis-py's default, 100, fails the 101st caller at once: the
    worker passes one per run it may run at once, plus its own).

    ``url``: ``redis://``, ``rediss://`` (certificates verified; ``ssl_ca_certs`` names the CA), ``unix://``
    or ``redis+sentinel://`` / ``rediss+sentinel://`` (the master is found through the sentinels and found
    again after a failover)."""
    options: RedisOptions = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": min(REDIS_CONNECT_TIMEOUT, timeout),
        "health_check_interval": 30,
        # No CLIENT SETINFO nor CLIENT MAINT_NOTIFICATIONS on connect: the appliance's ACL user is granted no
        # CLIENT subcommand (each connect would add a refusal to the ACL LOG), and older servers know neither.
        "driver_info": None,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if connections is not None:
        options["max_connections"] = connections
    if is_sentinel(url):
        return _sentinel_master(parse_sentinel_url(url), options)
    return redis.Redis.from_url(url, **options)


def bounded(client: redis.Redis, timeout: float) -> redis.Redis:
    """A client of the same server with the same settings (TLS, credentials, Sentinel), a pool of its own and
    socket timeouts of at most ``timeout`` seconds: for calls that must not block past a deadline (the lease
    keeper's), and that must not queue behind the other clients' connections."""
    pool = client.connection_pool
    kwargs = {key: value for key, value in pool.connection_kwargs.items() if key != "connection_pool"}
    kwargs["socket_timeout"] = min(timeout, kwargs.get("socket_timeout") or timeout)
    kwargs["socket_connect_timeout"] = min(timeout, kwargs.get("socket_connect_timeout") or timeout)
    if isinstance(pool, SentinelConnectionPool):
        own: redis.ConnectionPool = SentinelConnectionPool(pool.service_name, pool.sentinel_manager,
                                                           connection_class=pool.connection_class,
                                                           is_master=pool.is_master, **kwargs)
    else:
        own = type(pool)(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=own)


def _sentinel_master(target: SentinelTarget, options: RedisOptions) -> redis.Redis:
    """A client of the current master of ``target``; the sentinels get the same TLS settings and timeouts."""
    query = dict(target.options)
    sentinel_auth = {"username": query.pop("sentinel_username", None), "password": query.pop("sentinel_password", None)}
    # The URL's own query arguments (ssl_ca_certs...), parsed as redis-py parses them: keys the operator chose.
    tls: dict[str, Any] = {name: URL_QUERY_ARGUMENT_PARSERS.get(name, str)(value) for name, value in query.items()}
    if target.tls:
        tls["ssl"] = True
    sentinel_kwargs = {**options, **sentinel_auth, **tls}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(target.master, db=target.db, username=target.username, password=target.password,
                               **tls, **options)


def untrusted(exc: BaseException) -> str | None:
    """One line saying why ``exc`` is a refused server certificate (which retrying cannot fix), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return (f"Redis server certificate refused ({current.verify_message or current.reason}); "
                    "check REDIS_TLS_CA_FILE and the host name in REDIS_URL")
        if isinstance(current, psycopg.OperationalError) and any(word in str(current) for word in _PG_REFUSED):
            detail = " ".join(str(current).split())
            return (f"PostgreSQL server certificate refused ({redact_url(detail)}); "
                    "check DATABASE_TLS_CA_FILE and the host name in DATABASE_URL")
        current = current.__cause__ or current.__context__
    return None


class BoundedConnection(psycopg.Connection):
    """A PostgreSQL connection none of whose operations waits longer than ``answer_timeout`` seconds for the
    server. A partition that keeps the connection open and moves no byte is not noticed by libpq (no socket
    timeout of its own; TCP keepalives are answered by whatever holds the other end), so without this a query
    would wait for as long as the partition lasts, holding its run and its lease. The operation fails with
    ``NoAnswer`` (an ``OperationalError``) and the connection is closed: the protocol stopped mid-message, and a
    pool replaces a closed connection."""

    answer_timeout = 30.0

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if timeout is not None and timeout <= self.answer_timeout:
            return super().wait(gen, interval=interval, timeout=timeout)
        try:
            return super().wait(gen, interval=interval, timeout=self.answer_timeout)
        except psycopg.errors._WaitTimeout:
            self.close()
            raise NoAnswer(f"no answer from PostgreSQL within {self.answer_timeout:g} s (DATABASE_TIMEOUT); "
                           "the connection was closed") from None


class NoAnswer(psycopg.OperationalError):
    """A PostgreSQL operation got no answer within ``DATABASE_TIMEOUT``."""


def bounded_connection(timeout: float) -> type[BoundedConnection]:
    """The connection class whose operations wait at most ``timeout`` seconds for an answer."""
    return type("BoundedConnection", (BoundedConnection,), {"answer_timeout": timeout})


def make_pool(config: Config, max_size: int | None = None, name: str = "appliance",
              autocommit: bool = False) -> ConnectionPool:
    """A psycopg pool, not yet opened (so a missing database does not stop the worker from starting).

    ``autocommit`` pools serve single-statement bookkeeping (the ledger): one round trip per statement."""
    size = max_size or config.core.worker_threads + 2
    return ConnectionPool(
        config.core.database_url,
        min_size=1,
        max_size=size,
        open=False,
        name=name,
        timeout=5.0,
        connection_class=bounded_connection(config.core.database_timeout),
        kwargs={"connect_timeout": PG_CONNECT_TIMEOUT, "autocommit": autocommit, "application_name": name},
    )


def connect_db(config: Config, autocommit: bool = True) -> psycopg.Connection:
    """One direct connection, for the CLI and migrations."""
    return bounded_connection(config.core.database_timeout).connect(
        config.core.database_url, connect_timeout=PG_CONNECT_TIMEOUT, autocommit=autocommit)


def wait_for(name: str, probe: Callable[[], object], timeout: float, log, interval: float = 0.5,
             clock: Clock = SYSTEM) -> bool:
    """Call ``probe`` until it returns without raising or ``timeout`` passes; log each wait once per kind.

    A refused server certificate raises ``UntrustedService`` at once: the service is up, but not the one
    the configuration trusts, and waiting will not change that."""
    deadline = clock.monotonic() + timeout
    last_error = ""
    while True:
        try:
            probe()
            if last_error:
                log.info("%s is up", name)
            return True
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means "not up yet"
            refused = untrusted(exc)
            if refused:
                raise UntrustedService(refused) from None
            error = redact_url(f"{type(exc).__name__}: {exc}")
            if error != last_error:
                log.warning("waiting for %s: %s", name, error)
                last_error = error
        if clock.monotonic() >= deadline:
            log.error("%s still down after %.0fs", name, timeout)
            return False
        clock.sleep(interval)
