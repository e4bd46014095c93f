"""``/health``, ``/health/live`` and ``/health/ready``: seed 004's document plus per-component detail.

Overall status:

- ``unhealthy`` (HTTP 503) when a critical component is down: Redis, PostgreSQL, or the worker beside this
  sidecar (no heartbeat younger than its TTL);
- ``degraded`` (HTTP 200) when any other component is down or degraded (Qdrant; ``clock``: a live worker's wall
  clock is off Redis' clock by more than ``CLOCK_SKEW_WARN``, as its heartbeat says; ``disk``: the disk of
  ``APPLIANCE_HOME`` below ``DISK_FREE_WARN``), a job is stale: it has not succeeded within
  ``HEALTH_STALE_FACTOR`` x its period (the dead-man's switch), or a provider's circuit breaker is open (or
  half-open, waiting for its trial call);
- ``ok`` (HTTP 200) otherwise.

While that disk is full (``appliance.kernel.runtime.disk``), a critical component that keeps its data there (the
embedded Redis and PostgreSQL, the worker) and is down is listed under ``disk.affected`` and makes the status
``degraded``, not ``unhealthy``: restarting the container would not free the disk and could not start on it,
while the appliance keeps what it committed and recovers by itself once space returns.

``/health/live`` does no I/O at all, so a liveness probe never restarts the container (and its Qdrant) because
Redis is down; ``/health/ready`` runs the same checks as ``/health`` and answers 503 when unhealthy.
"""

from __future__ import annotations

import socket
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
from flask import Blueprint, Response, current_app, jsonify

from appliance import __version__
from appliance.config import Config
from appliance.kernel.contract.packs import SeedNames, packs_of
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state.workers import WorkerView
from appliance.kernel.runtime.clients import make_redis
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.freshness import Freshness, freshness
from appliance.sidecar.checks import (
    DISK_NAME,
    CachedProbe,
    Component,
    Snapshot,
    Status,
    check_database,
    check_disk,
    check_qdrant,
    check_redis,
    embedded_qdrant,
)
from appliance.sidecar.programs import Programs

CRITICAL = ("redis", "database", "worker")
HTTP_STATUS = {"ok": 200, "degraded": 200, "unhealthy": 503}
SERVICE_WORDS = {"redis": ("connected", "disconnected"), "database": ("connected", "disconnected"),
                 "qdrant": ("healthy", "unhealthy")}

bp = Blueprint("health", __name__)


class Monitor:
    """The dependency probes of one sidecar process and the evaluation of their results.

    ``clock`` is what heartbeats, job freshness, cached results and uptime are measured against.
    """

    def __init__(self, config: Config, clock: Clock = SYSTEM, hostname: str | None = None):
        side, core = config.sidecar, config.core
        self.config, self.clock = config, clock
        self.hostname = hostname or socket.gethostname()
        self.started = clock.time()
        self.programs = Programs(core.run_dir, side.cache_ttl, side.check_timeout, clock)
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")
        self.redis = make_redis(core.redis_url, timeout=side.check_timeout)
        self.qdrant_embedded = not (core.qdrant_url_set or core.qdrant_bin)
        packs = packs_of(config)
        #: Seed 004's names of the packs' jobs (``jobs`` here, ``jobsProcessed`` and ``lastRun`` in /metrics).
        self.seed_names: dict[str, SeedNames] = {job: names for pack in packs for job, names in pack.seed_names.items()}
        # A pack's section (which embedder and Qdrant the indexer uses) depends only on the configuration:
        # computed once.
        self.pack_health = {pack.name: pack.health(config) for pack in packs if pack.health is not None}
        headers = {"api-key": core.qdrant_api_key} if core.qdrant_api_key else {}
        self.http = httpx.Client(timeout=side.check_timeout, headers=headers)
        checks = {
            "redis": lambda: check_redis(self.redis, clock),
            "database": lambda: check_database(core.database_url),
            "qdrant": embedded_qdrant if self.qdrant_embedded
            else (lambda: check_qdrant(self.http, core.qdrant_url)),
            "disk": lambda: check_disk(core.home, side.disk_free_warn),
        }
        #: The components that keep their data on APPLIANCE_HOME's disk: a full disk is why they fail.
        self.on_disk = frozenset({"worker", *(["redis"] if core.redis_embedded else []),
                                  *(["database"] if core.database_embedded else []),
                                  *(["qdrant"] if self.qdrant_embedded or core.qdrant_bin else [])})
        self.probes = {name: CachedProbe(name, check, side.cache_ttl, side.check_timeout, self.executor, clock)
                       for name, check in checks.items()}

    def close(self) -> None:
        """Release connections and threads (tests; gunicorn workers just exit)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.redis.close()
        self.http.close()

    def uptime(self) -> int:
        """The appliance's uptime (since supervisord started), not this process's: see ``Programs``."""
        return self.programs.uptime(fallback=self.started)

    def components(self) -> dict[str, Component]:
        """Every probe's result, all awaited together until one shared deadline."""
        deadline = self.clock.monotonic() + self.config.sidecar.check_timeout
        pending = {name: probe.poll() for name, probe in self.probes.items()}
        return {name: self.probes[name].settle(value, deadline) for name, value in pending.items()}

    def report(self) -> dict[str, Any]:
        """The ``/health`` document."""
        return self.evaluate()[0]

    def evaluate(self) -> tuple[dict[str, Any], Snapshot | None]:
        """The ``/health`` document and the cluster state read by the Redis check (None when Redis is down)."""
        components = self.components()
        snapshot: Snapshot | None = components["redis"].data
        jobs = snapshot.jobs if snapshot else []
        workers = snapshot.workers if snapshot else []
        now = self.clock.now()
        components["worker"] = replace(self.worker_component(components["redis"], workers), checked_at=iso(now))
        components["clock"] = replace(self.clock_component(components["redis"], workers), checked_at=iso(now))
        pause = snapshot.paused_all if snapshot else None
        if pause:
            jobs = [replace(job, paused=True) for job in jobs]  # a stopped scheduler makes no job stale
        fresh = freshness(jobs, workers, now.timestamp(), self.config.sidecar.stale_factor)
        breakers = {b.name: {k: v for k, v in b.to_json().items() if k != "name"}
                    for b in (snapshot.breakers if snapshot else [])}
        disk = self.disk(components)
        status = overall(components, fresh, breakers, disk["affected"])
        services = {name: SERVICE_WORDS[name][components[name].status == Status.DOWN] for name in SERVICE_WORDS}
        if self.qdrant_embedded:
            services["qdrant"] = "embedded"
        seed = {job: names.health for job, names in self.seed_names.items()}
        running = {key: False for key in seed.values()}
        running.update({seed.get(job.name, job.name): job.running is not None for job in jobs})
        return {
            "status": status,
            "timestamp": iso(now),
            "uptime": self.uptime(),
            "programs": self.programs.snapshot(),
            "version": __version__,
            "services": services,
            "jobs": running,
            "components": {name: c.public() for name, c in components.items()},
            "freshness": {name: entry.to_json() for name, entry in fresh.items()},
            "scheduler": {"state": "paused" if pause else "running", "paused_by": pause.by if pause else None,
                          "paused_at": pause.at if pause else None},
            "breakers": breakers,
            "clocks": clocks(workers, self.config.core.clock_skew_warn),
            "disk": disk,
            **self.pack_health,
        }, snapshot

    def disk(self, components: dict[str, Component]) -> dict[str, Any]:
        """The ``disk`` section: the disk check's figures, and while the disk is full the components that keep
        their data there and are not up (``affected``)."""
        found = components["disk"]
        facts = dict(found.data or {"status": "unknown", "filesystem": DISK_NAME})
        full = facts["status"] == "full"
        facts["affected"] = sorted(name for name, c in components.items()
                                   if full and name in self.on_disk and c.status != Status.UP)
        return facts

    def worker_component(self, redis_result: Component, workers: list[WorkerView]) -> Component:
        """The worker beside this sidecar, judged by its heartbeat (key TTL = ``HEARTBEAT_TTL``)."""
        core = self.config.core
        if redis_result.status == Status.DOWN:
            return Component(Status.DOWN, "unknown: Redis, where heartbeats live, is down")
        live = [w for w in workers if w.heartbeat_age <= float(w.beat.ttl or core.heartbeat_ttl)]
        if not (core.is_worker and core.worker_enabled):
            if live:
                return Component(Status.UP, f"worker disabled here (IS_WORKER/WORKER_ENABLED); "
                                            f"{len(live)} live worker(s) in the cluster")
            return Component(Status.DEGRADED, "worker disabled here and no live worker in the cluster")
        mine = [w for w in live if w.beat.host == self.hostname]
        if not mine:
            return Component(Status.DOWN, f"no heartbeat younger than its TTL ({core.heartbeat_ttl:g}s) from a "
                                          f"worker on {self.hostname}; {len(live)} live worker(s) elsewhere")
        newest = min(mine, key=lambda w: w.heartbeat_age)
        return Component(Status.UP, f"worker {newest.id} beat {newest.heartbeat_age:.1f}s ago "
                                    f"(TTL {float(newest.beat.ttl or core.heartbeat_ttl):g}s)")

    def clock_component(self, redis_result: Component, workers: list[WorkerView]) -> Component:
        """Whether every live worker's wall clock is within ``CLOCK_SKEW_WARN`` of Redis' clock, as each measured
        it at its last heartbeat; degraded naming each one that is not (skew makes slots run early or late, and can
        have some recorded missed, but never runs one twice: docs/worker.md "Clocks")."""
        if redis_result.status == Status.DOWN:
            return Component(Status.DOWN, "unknown: Redis, where heartbeats live, is down")
        threshold = self.config.core.clock_skew_warn
        offsets = {w.id: w.beat.clock for w in workers if w.beat.clock is not None}
        skewed = [f"{worker} {offset.seconds:+.3f}s" for worker, offset in sorted(offsets.items())
                  if offset.past(threshold)]
        if skewed:
            return Component(Status.DEGRADED, f"worker clock(s) off Redis' clock by more than CLOCK_SKEW_WARN "
                                              f"({threshold:g}s): {', '.join(skewed)}")
        return Component(Status.UP, f"{len(offsets)} worker clock(s) within {threshold:g}s of Redis' clock")


def clocks(workers: list[WorkerView], threshold: float) -> dict[str, dict[str, Any]]:
    """Each live worker's clock offset from Redis' clock (its wall clock minus Redis', with the error bound of
    the measurement) and whether it is past ``CLOCK_SKEW_WARN``; a worker that measured none is left out."""
    result = {}
    for worker in workers:
        offset = worker.beat.clock
        if offset is not None:
            result[worker.id] = {**offset.as_dict(), "skewed": offset.past(threshold)}
    return result


def overall(components: dict[str, Component], fresh: dict[str, Freshness],
            breakers: dict[str, dict[str, Any]] | None = None, affected: Collection[str] = ()) -> str:
    """``affected``: components down because the disk is full; they degrade the status instead of failing it."""
    if any(components[name].status == Status.DOWN for name in CRITICAL if name in components and name not in affected):
        return "unhealthy"
    if any(c.status != Status.UP for c in components.values()):
        return "degraded"
    if any(entry.status == "stale" for entry in fresh.values()):
        return "degraded"
    if any(b["state"] != "closed" for b in (breakers or {}).values()):
        return "degraded"  # a provider keeps failing: its messages wait (open, or half-open awaiting a trial)
    return "ok"


def _monitor() -> Monitor:
    return current_app.extensions["appliance"].monitor


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/health/live")
def live() -> Response:
    """No I/O: answers as long as this process serves requests."""
    monitor = _monitor()
    return jsonify(status="ok", timestamp=iso(monitor.clock.now()), uptime=monitor.uptime())


@bp.get("/health")
def health() -> tuple[Response, int]:
    report = _monitor().report()
    return jsonify(report), HTTP_STATUS[report["status"]]


@bp.get("/health/ready")
def ready() -> tuple[Response, int]:
    report = _monitor().report()
    ready_now = report["status"] != "unhealthy"
    body = {"status": report["status"], "ready": ready_now, "timestamp": report["timestamp"],
            "components": {name: c["status"] for name, c in report["components"].items()}}
    return jsonify(body), 200 if ready_now else 503

