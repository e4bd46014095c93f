"""The worker's heartbeat: who it is, what it runs, its clock's offset from Redis' clock, its job table, and the
state of Redis' eviction policy, published every ``HEARTBEAT_TTL``/3 on a thread of its own (``Beats``), so a
slow heartbeat never delays a lease's renewal."""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis

from appliance import __version__
from appliance.kernel.contract.spec import EffectiveSpec
from appliance.kernel.protocol.eviction import eviction_policy, eviction_problem
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.jobs import PublishedJob
from appliance.kernel.protocol.state.workers import Beat
from appliance.kernel.runtime import metrics
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.skew import SkewWatch
from appliance.worker.liveness import Liveness
from appliance.worker.loop import Worker

log = logging.getLogger("appliance.worker")


def job_table(worker: Worker, me: str) -> list[PublishedJob]:
    now = worker.clock.now()
    versions = worker.runner.claims.spec_versions
    return [PublishedJob(
        name=job.name, schedule=job.schedule.text, describe=job.schedule.describe(), timezone=job.timezone,
        period_seconds=job.period, lock_ttl=job.lock_ttl, grace=job.grace, max_retries=job.max_retries,
        enabled=job.enabled, description=job.description,
        next_runs=tuple(iso(job.policy.start_of(job.name, t)) for t in job.schedule.next_runs(now, 5)),
        published_by=me, published_at=iso(now), policy=job.policy.columns(),
        spec=EffectiveSpec.of(job).to_json(), spec_version=versions.get(job.name),
        params=tuple(param.to_json() for param in job.params),
    ) for job in worker.jobs.values()]


class Heartbeat:
    """Publishes this worker's heartbeat (with its clock's offset from Redis' clock) and job table; called every
    TTL/3 by ``Beats``, on a thread and a Redis client of its own. ``liveness``: this process's liveness lock,
    taken again here when the disk was full at start; ``eviction_problem``: what the start found wrong with
    Redis' eviction policy, if anything (said again only when it changes)."""

    def __init__(self, worker: Worker, state: ClusterState, me: str, ttl: float, skew_warn: float = 1.0,
                 liveness: Liveness | None = None, eviction_problem: str | None = None):
        self.worker, self.state, self.me, self.ttl = worker, state, me, ttl
        self.started = iso(worker.clock.now())
        self.eviction_problem = eviction_problem
        self.skew = SkewWatch(state.client, skew_warn, worker.clock)
        self.liveness = liveness

    def __call__(self) -> None:
        self._hold_liveness()
        rss, cpu = metrics.sample_process("worker")
        offset = self.skew.check()
        beat = Beat(host=socket.gethostname(), pid=os.getpid(), started=self.started, beat_at=self.worker.clock.time(),
                    ttl=self.ttl, version=__version__, jobs=tuple(sorted(self.worker.jobs)),
                    running=tuple(self.worker.running_jobs()), rss_bytes=rss, cpu_seconds=cpu, clock=offset)
        self.state.workers.beat(self.me, beat, self.ttl)
        self.state.jobs.publish(job_table(self.worker, self.me))
        self._watch_eviction()

    def _hold_liveness(self) -> None:
        """Make the liveness file a full disk kept from being made at start. Never stops the heartbeat: its
        thread survives only Redis errors."""
        if self.liveness is None or self.liveness.held:
            return
        try:
            if self.liveness.hold():
                log.info("the worker's liveness file exists now (the disk has room again)")
        except OSError as exc:
            log.warning("cannot make the worker's liveness file; not trying again", extra=fields(error=str(exc)))
            self.liveness = None

    def _watch_eviction(self) -> None:
        """Keep the eviction gauge current (an operator may change the policy at run time) and say so once
        when it changes."""
        problem = eviction_problem(eviction_policy(self.state.client))
        metrics.REDIS_EVICTION_UNSAFE.set(1 if problem else 0)
        if problem != self.eviction_problem:
            if problem:
                log.warning("UNSAFE REDIS: %s", problem)
            elif self.eviction_problem is not None:
                log.info("Redis eviction policy is safe again (noeviction)")
            self.eviction_problem = problem


class Beats:
    """Calls ``heartbeat`` every ``every`` seconds on its own thread until stopped; a Redis error tries again
    within a second."""

    def __init__(self, heartbeat: Heartbeat, every: float, clock: Clock = SYSTEM):
        self.heartbeat, self.every, self.clock = heartbeat, every, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop beating, waiting at most ``timeout`` seconds for a heartbeat in flight (a daemon thread: one
        still waiting for Redis ends with the process)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.heartbeat()
                wait = self.every
            except redis.RedisError as exc:
                log.debug("heartbeat failed: %s", exc)
                wait = min(1.0, self.every)
            if self.clock.wait(self._stop, wait):
                return
