"""Dependency checks with a hard timeout and a short cache, so probes stay fast whatever the dependencies do.

A ``CachedProbe`` runs its check in a background thread. Callers wait for it at most until their deadline;
a check that has not answered by then counts as ``down`` ("no answer within ..."), and that verdict is cached
like any other. At most one check per dependency is in flight per process, so a flood of probes against a
dependency that accepts connections and never replies costs one stuck thread, not one per request. A result
older than the cache TTL but younger than twice it is served at once while a fresh check runs behind it
(stale-while-revalidate), so a probe seldom waits for a dependency at all.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from appliance.config.env import redact_url
from appliance.config.sidecar import FreeSpace
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.eviction import eviction_policy, eviction_problem
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.breakers import BreakerView
from appliance.kernel.protocol.state.jobs import JobView
from appliance.kernel.protocol.state.pauses import Pause
from appliance.kernel.protocol.state.workers import WorkerView
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.disk import FULL_BELOW, measure, size_text

#: An absolute path: a slash not inside a word, URL or relative path, then at least two parts.
_PATH = re.compile(r"(?<![\w:/.~-])/[^\s/\"',;]+(?:/[^\s/\"',;]*)+")

# libpq rounds connect timeouts below 2 s up to 2 s; the probe's own deadline is what bounds the answer.
PG_CONNECT_TIMEOUT = 2


class Status(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True)
class Component:
    """The state of one dependency as ``/health`` reports it."""

    status: Status
    message: str
    latency_ms: float | None = None
    #: When the result was taken, stamped by whoever holds the clock (``CachedProbe``, ``Monitor``).
    checked_at: str | None = None
    #: Data read during the check (the Redis check reads the cluster state), never shown as is.
    data: Any = None

    def public(self) -> dict[str, Any]:
        """What the unauthenticated ``/health`` shows: no filesystem path (a socket or data directory tells
        a caller where to look)."""
        return {"status": self.status.value, "message": without_paths(self.message),
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
                "lastChecked": self.checked_at}


def without_paths(text: str) -> str:
    """``text`` with every absolute path of two or more parts replaced by ``<path>``; URLs are left alone
    (their path follows a host, never a space or quote)."""
    return _PATH.sub(lambda m: "<path>" + m.group(0)[len(m.group(0).rstrip(".")):], text)


def failure(exc: BaseException) -> str:
    """A one-line description of ``exc`` with any URL password masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact_url(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class CachedProbe:
    """One dependency check: hard deadline, result cache, at most one run in flight.

    ``clock`` ages the cached result and stamps ``checked_at``; deadlines are its ``monotonic()`` seconds.
    """

    def __init__(self, name: str, check: Callable[[], Component], ttl: float, timeout: float,
                 executor: ThreadPoolExecutor, clock: Clock = SYSTEM):
        self.name, self.check, self.ttl, self.timeout = name, check, ttl, timeout
        self.executor, self.clock = executor, clock
        self.runs = 0
        self._lock = threading.Lock()
        self._value: Component | None = None
        self._at = 0.0
        self._future: Future | None = None

    def poll(self) -> Component | Future:
        """The cached result, or the future of the check now in flight (started here if none is)."""
        with self._lock:
            age = self.clock.monotonic() - self._at
            if self._value is not None and age < self.ttl:
                return self._value
            if self._future is None:
                self.runs += 1
                self._future = self.executor.submit(self._run)
            if self._value is not None and age < 2 * self.ttl:
                return self._value
            return self._future

    def settle(self, pending: Component | Future, deadline: float) -> Component:
        """``pending`` from ``poll()`` as a result, waiting for it at most until ``deadline`` (the clock's
        ``monotonic()``)."""
        if isinstance(pending, Component):
            return pending
        try:
            # The check is network I/O bounded by real socket timeouts, so the wait is real time too: a stepped
            # clock in a test shortens nothing here, it only decides how much of the timeout is left.
            return pending.result(timeout=max(0.0, deadline - self.clock.monotonic()))
        except FutureTimeout:
            # The check keeps its place in flight: no second thread is started while this one hangs.
            verdict = Component(Status.DOWN, f"no answer within {self.timeout:g}s", checked_at=iso(self.clock.now()))
            with self._lock:
                self._value, self._at = verdict, self.clock.monotonic()
            return verdict

    def result(self, deadline: float) -> Component:
        return self.settle(self.poll(), deadline)

    def _run(self) -> Component:
        started = time.perf_counter()
        try:
            value = self.check()
        except Exception as exc:  # noqa: BLE001 - any failure of a check means the dependency is down
            value = Component(Status.DOWN, failure(exc))
        if value.latency_ms is None:
            value = replace(value, latency_ms=(time.perf_counter() - started) * 1000)
        value = replace(value, checked_at=iso(self.clock.now()))
        with self._lock:
            self._value, self._at, self._future = value, self.clock.monotonic(), None
        return value


@dataclass(frozen=True)
class Snapshot:
    """The cluster state the Redis check reads for ``/health`` and ``/metrics``: the jobs, the live workers, how
    many dead letters wait, the counters, the pause-all in force, the breakers and Redis' eviction policy."""

    jobs: list[JobView]
    workers: list[WorkerView]
    dead_letters: int
    counts: dict[str, int]
    paused_all: Pause | None
    breakers: list[BreakerView]
    eviction_policy: str


def check_redis(client: redis.Redis, clock: Clock = SYSTEM) -> Component:
    """PING, then read what ``/health`` and ``/metrics`` show (``data``: a ``Snapshot``), so both are served from
    this cached check and never wait on Redis themselves."""
    started = time.perf_counter()
    client.ping()
    latency = (time.perf_counter() - started) * 1000
    state = ClusterState(client, clock)
    policy = eviction_policy(client)
    data = Snapshot(jobs=state.jobs.views(), workers=state.workers.live(),
                    dead_letters=int(client.zcard(keys.DLQ_INDEX)), counts=state.history.counts(),
                    paused_all=state.pauses.paused_all(), breakers=state.breakers.views(), eviction_policy=policy)
    problem = eviction_problem(policy)
    if problem:
        return Component(Status.DEGRADED, f"connected (latency: {latency:.1f}ms), but {problem}", latency, data=data)
    return Component(Status.UP, f"connected (latency: {latency:.1f}ms)", latency, data=data)


def check_database(url: str) -> Component:
    """``SELECT 1`` on a new connection (a pooled one could hang on a half-dead socket with no timeout)."""
    started = time.perf_counter()
    with psycopg.connect(url, connect_timeout=PG_CONNECT_TIMEOUT, autocommit=True,
                         application_name="appliance-sidecar") as conn:
        conn.execute("SELECT 1").fetchone()
    latency = (time.perf_counter() - started) * 1000
    return Component(Status.UP, f"connected (latency: {latency:.1f}ms)", latency)


def check_qdrant(http: httpx.Client, url: str) -> Component:
    """``GET /readyz`` of a Qdrant server."""
    started = time.perf_counter()
    response = http.get(url.rstrip("/") + "/readyz")
    latency = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return Component(Status.DOWN, f"/readyz answered HTTP {response.status_code}", latency)
    return Component(Status.UP, f"ready (latency: {latency:.1f}ms)", latency)


def embedded_qdrant() -> Component:
    """The embedded Qdrant (Qdrant Edge) opens inside the worker process, one process at a time behind a file
    lock: the sidecar never takes it from the worker, so it does not probe the storage."""
    return Component(Status.UP, "embedded Qdrant Edge (inside the worker process; not probed)")


#: How ``/health`` names the filesystem it looks at: by the setting, never by its path (see ``Component.public``).
DISK_NAME = "APPLIANCE_HOME"


def check_disk(home: Path, warn: FreeSpace) -> Component:
    """The free space of ``home``'s filesystem (``data``: what ``/health`` shows as ``disk``): ``full`` below
    ``appliance.kernel.runtime.disk.FULL_BELOW`` or without a free inode, ``low`` below ``DISK_FREE_WARN``."""
    space = measure(home)
    floor = warn.of(space.total_bytes)
    state = "full" if space.full else "low" if space.free_bytes < floor else "ok"
    data = {"status": state, "filesystem": DISK_NAME, "type": space.fstype, "free_bytes": space.free_bytes,
            "total_bytes": space.total_bytes, "free_inodes": space.free_inodes, "warn_below_bytes": floor,
            "full_below_bytes": FULL_BELOW}
    inodes = "" if space.free_inodes is None else f", {space.free_inodes} inodes"
    kind = f" ({space.fstype})" if space.fstype else ""
    free, total = size_text(space.free_bytes), size_text(space.total_bytes)
    text = f"{DISK_NAME}'s filesystem{kind}: {free} free of {total}{inodes}"
    if state == "full":
        return Component(Status.DEGRADED, f"{text}: full; what the appliance writes there fails until space is "
                                          f"freed, and it recovers by itself then", data=data)
    if state == "low":
        return Component(Status.DEGRADED, f"{text}: below DISK_FREE_WARN ({size_text(floor)})", data=data)
    return Component(Status.UP, text, data=data)
