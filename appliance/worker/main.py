"""The worker process from start to exit: wait for services, plan slots, loop, and shut down gracefully.

On SIGTERM or SIGINT it stops taking slots and triggers, asks running jobs to stop at their next checkpoint,
waits for them up to ``SHUTDOWN_TIMEOUT``, releases any lease still held, closes its pools and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import httpx
import redis

from appliance import __version__, keys, locks, metrics
from appliance.clients import make_pool, make_redis, wait_for
from appliance.config import Config
from appliance.logs import fields
from appliance.owner import iso, utcnow, worker_id
from appliance.state import ClusterState
from appliance.worker.alerts import Alerter
from appliance.worker.leases import LeaseKeeper
from appliance.worker.loop import Worker
from appliance.worker.pool import RunPool
from appliance.worker.runner import Runner

log = logging.getLogger("appliance.worker")


def job_table(worker: Worker, me: str) -> dict[str, dict]:
    now = worker.clock()
    table = {}
    for job in worker.jobs.values():
        table[job.name] = {
            "name": job.name, "schedule": job.schedule.text, "describe": job.schedule.describe(),
            "timezone": job.timezone, "period_seconds": job.period, "lock_ttl": job.lock_ttl, "grace": job.grace,
            "max_retries": job.max_retries, "enabled": job.enabled, "description": job.description,
            "next_runs": [iso(t) for t in job.schedule.next_runs(now, 5)], "published_by": me,
            "published_at": iso(now),
        }
    return table


class Heartbeat:
    """Publishes this worker's heartbeat and job table; called by the lease keeper every TTL/3."""

    def __init__(self, worker: Worker, state: ClusterState, me: str, ttl: float):
        self.worker, self.state, self.me, self.ttl = worker, state, me, ttl
        self.started = iso(utcnow())

    def __call__(self) -> None:
        rss, cpu = metrics.sample_process("worker")
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": self.started, "beat_at": time.time(),
                "ttl": self.ttl, "version": __version__, "jobs": sorted(self.worker.jobs),
                "running": self.worker.running_jobs(), "rss_bytes": rss, "cpu_seconds": cpu}
        self.state.beat(self.me, info, self.ttl)
        self.state.publish_jobs(job_table(self.worker, self.me))


def listen(worker: Worker, client: redis.Redis) -> None:
    """Wake the loop at once on control messages; reconnects by itself after a Redis outage."""
    backoff = 0.5
    while not worker.stopping:
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(keys.CONTROL_CHANNEL)
            worker.wake(refresh=True)
            backoff = 0.5
            while not worker.stopping:
                if pubsub.get_message(timeout=5.0):
                    worker.wake(refresh=True)
        except redis.RedisError:
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def wait_for_services(config: Config, client: redis.Redis, needs: set[str]) -> None:
    wait = config.core.startup_wait
    wait_for("Redis", client.ping, wait, log)
    if "qdrant" in needs and config.core.qdrant_url_set:
        headers = {"api-key": config.core.qdrant_api_key} if config.core.qdrant_api_key else {}
        url = config.core.qdrant_url.rstrip("/") + "/readyz"
        wait_for("Qdrant", lambda: httpx.get(url, headers=headers, timeout=2).raise_for_status(), wait, log)
    elif "qdrant" in needs:
        log.info("Qdrant: using qdrant-client's embedded local mode", extra=fields(path=str(config.core.qdrant_path)))


def build(config: Config, client: redis.Redis | None = None, db=None, clock=None) -> tuple[Worker, LeaseKeeper]:
    """Wire a worker from ``config`` (entry points and tests)."""
    client = client or make_redis(config.core.redis_url)
    jobs = config.enabled_jobs
    me = worker_id()
    scripts = locks.register(client)
    pool = RunPool(max(config.core.worker_threads, len(jobs)))
    keeper = LeaseKeeper(scripts, heartbeat=lambda: None, heartbeat_every=config.core.heartbeat_ttl / 3)
    runner = Runner(config, client, scripts, db, keeper, Alerter(client, config.core.alerts), me)
    worker = Worker(config, client, runner, pool, jobs, **({"clock": clock} if clock else {}))
    keeper.heartbeat = Heartbeat(worker, ClusterState(client), me, config.core.heartbeat_ttl)
    return worker, keeper


def serve(config: Config) -> int:
    """Run the worker until SIGTERM/SIGINT; returns the exit code."""
    if not (config.core.is_worker and config.core.worker_enabled):
        log.info("worker disabled (IS_WORKER/WORKER_ENABLED); idling until stopped")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        return 0
    client = make_redis(config.core.redis_url)
    needs = {need for job in config.enabled_jobs for need in job.needs}
    wait_for_services(config, client, needs)
    # Two connections per concurrent run (its work, and its fence or history row) plus two spare, so
    # bookkeeping never waits behind the jobs themselves.
    db = make_pool(config, max_size=2 * max(config.core.worker_threads, len(config.enabled_jobs)) + 2)
    db.open(wait=False)
    metrics.WORKER_START.set(time.time())
    worker, keeper = build(config, client, db)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: _on_signal(worker, signum))
    worker.plan()
    keeper.start()
    threading.Thread(target=listen, args=(worker, make_redis(config.core.redis_url, timeout=10)),
                     name="control", daemon=True).start()
    log.info("worker started", extra=fields(jobs=",".join(sorted(worker.jobs)), worker=keeper.heartbeat.me))
    worker.run_forever()
    return shutdown(worker, keeper, db, config.core.shutdown_timeout)


def _on_signal(worker: Worker, signum: int) -> None:
    log.info("stopping on %s", signal.Signals(signum).name)
    worker.stop()


def shutdown(worker: Worker, keeper: LeaseKeeper, db, timeout: float) -> int:
    started = time.monotonic()
    worker.runner.cancel_running("shutdown")
    finished = worker.pool.wait_idle(timeout)
    for lease in keeper.held():
        try:
            locks.release(worker.runner.scripts, lease.job, lease.token)
            log.warning("released the lease of a run that did not stop in time", extra=fields(job=lease.job))
        except redis.RedisError:
            pass
    keeper.stop()
    try:
        ClusterState(worker.redis).forget_worker(keeper.heartbeat.me)
    except (redis.RedisError, AttributeError):
        pass
    if db is not None:
        db.close(timeout=1)
    metrics.mark_dead(worker.config.core.metrics_dir)
    log.info("worker stopped", extra=fields(clean=finished, seconds=round(time.monotonic() - started, 3)))
    if not finished:
        # A run that ignored its checkpoints is still executing; its lease is released already. Leave now
        # instead of letting interpreter shutdown wait on it (or on anything it started), so the stop keeps
        # the SHUTDOWN_TIMEOUT bound that supervisord's stopwaitsecs is built on.
        logging.shutdown()
        os._exit(0)
    return 0

