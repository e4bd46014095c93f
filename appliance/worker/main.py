"""The worker process from start to exit: wait for services, close what dead predecessors left open, plan
slots, loop, and shut down gracefully.

On SIGTERM or SIGINT it stops taking slots and triggers, asks running jobs to stop at their next checkpoint,
waits for them up to ``SHUTDOWN_TIMEOUT``, records any run still going as abandoned and releases its lease,
writes the ledger entries it still holds, closes its pools and exits 0.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import redis

from appliance.config import Config
from appliance.kernel.contract.catalog import JobSettings, load_jobs
from appliance.kernel.protocol import keys, locks
from appliance.kernel.protocol.eviction import eviction_policy, eviction_problem
from appliance.kernel.protocol.ledger import CloseRuns, Ledger
from appliance.kernel.protocol.owner import iso, worker_id
from appliance.kernel.protocol.starts import StartBudget
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime import metrics, tracing
from appliance.kernel.runtime.clients import REDIS_SOCKET_TIMEOUT, bounded, make_pool, make_redis, wait_for
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.redaction import Redactor
from appliance.worker.alerts import Alerter
from appliance.worker.heartbeat import Beats, Heartbeat
from appliance.worker.leases import LeaseKeeper, call_timeout
from appliance.worker.liveness import Liveness
from appliance.worker.loop import Worker
from appliance.worker.pool import RunPool
from appliance.worker.recorder import Recorder
from appliance.worker.retention import RetentionPass
from appliance.worker.runner import Runner
from appliance.worker.specs import store_versions

#: Seconds a thread may hold the GIL before one waiting for it gets it (Python's default is 0.005).
GIL_SWITCH_INTERVAL = 0.0005
#: From this many jobs on, Python's default interval instead (see ``switch_interval``).
HERD_JOBS = 100
HERD_SWITCH_INTERVAL = 0.005


def switch_interval(jobs: int) -> float:
    """The GIL switch interval for a worker of ``jobs`` jobs. A few threads waiting for their instant must get
    the GIL soon after it, not after the 5 ms another run's bookkeeping may hold it for (0.5 ms: 10 jobs on one
    second, p99 lag 8.3 ms at 5 ms, 3.7-4.4 ms at 0.5 ms). Hundreds of threads woken on one instant are the
    opposite case: each gives the GIL up by itself at its first I/O, and forcing a switch every 0.5 ms among
    them only adds switches (200 jobs: p99 206-417 ms at 0.5 ms, 60 ms at 5 ms, CPU per slot 1,400-1,700 us
    against 1,000 us; docs/performance.md "Herds")."""
    return GIL_SWITCH_INTERVAL if jobs < HERD_JOBS else HERD_SWITCH_INTERVAL
#: The most connections of the ledger's pool (runs alone, a herd's claim, the ends' flights, the recorder).
LEDGER_CONNECTIONS = 16
#: The last part of SHUTDOWN_TIMEOUT, kept for recording and releasing what did not stop in time and for
#: writing the ledger entries still held.
WRAP_UP = 0.5


def run_window(timeout: float) -> float:
    """How long running jobs get to reach a checkpoint when the worker stops: ``SHUTDOWN_TIMEOUT`` less the
    wrap-up, so the worker's whole stop fits ``SHUTDOWN_TIMEOUT``."""
    return max(timeout - WRAP_UP, timeout / 2)

log = logging.getLogger("appliance.worker")


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
            worker.clock.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def wait_for_services(config: Config, client: redis.Redis, needs: set[str]) -> None:
    wait = config.core.startup_wait
    wait_for("Redis", client.ping, wait, log)
    if "qdrant" in needs and config.core.qdrant_url_set:
        headers = {"api-key": config.core.qdrant_api_key} if config.core.qdrant_api_key else {}
        url = config.core.qdrant_url.rstrip("/") + "/readyz"
        wait_for("Qdrant", lambda: httpx.get(url, headers=headers, timeout=2).raise_for_status(), wait, log)
    elif "qdrant" in needs:
        log.info("Qdrant: no server; the knowledge store is the embedded Qdrant Edge",
                 extra=fields(path=str(config.core.home / "qdrant-edge")))


@dataclass(frozen=True)
class Assembly:
    """A worker and what runs beside it: the lease keeper (renewals, deadlines) and the heartbeat's thread."""

    worker: Worker
    keeper: LeaseKeeper
    heartbeat: Heartbeat
    beats: Beats

    def start(self) -> None:
        self.keeper.start()
        self.beats.start()

    def stop(self, timeout: float = 4.0) -> None:
        """Stop the heartbeat and the keeper within ``timeout`` seconds in all."""
        self.beats.stop(timeout / 2)
        self.keeper.stop(timeout / 2)


def build(config: Config, client: redis.Redis | None = None, db=None, clock: Clock = SYSTEM,
          ledger: Ledger | None = None, jobs: Sequence[JobSettings] | None = None, me: str | None = None,
          liveness: Liveness | None = None, eviction: str | None = None) -> Assembly:
    """Wire a worker from ``config`` (entry points and tests) for ``jobs`` (default: the catalog's enabled
    ones). Without ``ledger`` runs get no fence and nothing is recorded in PostgreSQL (tests of the loop
    alone, the benchmark's baseline). ``me``: the worker's id (default: this host and process)."""
    client = client or make_redis(config.core.redis_url)
    jobs = tuple(load_jobs(config).enabled if jobs is None else jobs)
    me = me or worker_id()
    scripts = locks.register(client)
    pool = RunPool(max(config.core.worker_threads, len(jobs)))
    # The keeper's own client: renewals bounded by the shortest lease they serve; the heartbeat's by its TTL.
    timeout = call_timeout([job.lock_ttl for job in jobs], REDIS_SOCKET_TIMEOUT)
    keeper = LeaseKeeper(locks.register(bounded(client, timeout)), clock=clock, timeout=timeout)
    alerter = Alerter(client, config.core.alerts, redactor=Redactor.from_config(config), clock=clock)
    runner = Runner(config, client, scripts, db, keeper, alerter, me, ledger=ledger, recorder=Recorder(ledger),
                    clock=clock)
    if config.core.max_starts_per_second > 0:
        runner.claims.starts = StartBudget(client, config.core.max_starts_per_second)
    worker = Worker(config, client, runner, pool, jobs, clock=clock)
    beat_client = bounded(client, min(REDIS_SOCKET_TIMEOUT, config.core.heartbeat_ttl / 5))
    heartbeat = Heartbeat(worker, ClusterState(beat_client), me, config.core.heartbeat_ttl,
                          config.core.clock_skew_warn, liveness=liveness, eviction_problem=eviction)
    return Assembly(worker, keeper, heartbeat, Beats(heartbeat, config.core.heartbeat_ttl / 3, clock))


def serve(config: Config, jobs: Sequence[JobSettings]) -> int:
    """Run ``jobs`` until SIGTERM/SIGINT; returns the exit code."""
    if not (config.core.is_worker and config.core.worker_enabled):
        log.info("worker disabled (IS_WORKER/WORKER_ENABLED); idling until stopped")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        return 0
    # Jobs due on the same second start together: see switch_interval.
    sys.setswitchinterval(switch_interval(len(jobs)))
    runs = max(config.core.worker_threads, len(jobs))
    tracing.start(config, "worker")  # before the clients are made: their calls are instrumented from here on
    # Every run may use the client at once (ctx.redis): a connection each, and spares for the loop's own calls.
    client = make_redis(config.core.redis_url, connections=runs + 16)
    needs = {need for job in jobs for need in job.needs}
    wait_for_services(config, client, needs)
    start, eviction = check_eviction(config, client)
    if not start:
        return ExitCode.CONFIG
    # The jobs' pool, with a connection per concurrent run plus spares, and an autocommit pool for the ledger
    # (one round trip per statement), apart so bookkeeping never waits behind the jobs themselves. The ledger's
    # statements of a herd are one per instant (appliance.worker.herd, .ends): a few connections serve any
    # number of jobs, and a thousand jobs do not ask PostgreSQL for a thousand connections.
    db = make_pool(config, max_size=runs + 2)
    ledger_pool = make_pool(config, max_size=min(runs + 2, LEDGER_CONNECTIONS), name="appliance-ledger",
                            autocommit=True)
    db.open(wait=False)
    ledger_pool.open(wait=False)
    metrics.WORKER_START.set(SYSTEM.time())
    me = worker_id()
    liveness = Liveness(config.core.run_dir / "workers", me)
    if not liveness.hold():
        log.warning("the disk is full: no liveness file for this worker yet (tried again at every heartbeat); "
                    "should it die before, its successor here waits for its leases' TTL")
    assembly = build(config, client, db, ledger=Ledger(ledger_pool), jobs=jobs, me=me, liveness=liveness,
                     eviction=eviction)
    worker = assembly.worker
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: _on_signal(worker, signum))
    close_dead_runs(worker, liveness)
    check_durability(worker.runner.ledger)
    worker.runner.claims.spec_versions = store_versions(worker.runner.ledger, list(worker.jobs.values()), me,
                                                        worker.runner.redact)
    worker.plan()
    RetentionPass(worker, config.core.retention_interval).arm()
    assembly.start()
    threading.Thread(target=listen, args=(worker, make_redis(config.core.redis_url, timeout=10)),
                     name="control", daemon=True).start()
    log.info("worker started", extra=fields(jobs=",".join(sorted(worker.jobs)), worker=me))
    # What start-up made (modules, the configuration, the jobs, the tracing SDK) lives as long as the process: out
    # of the collector's sight, a full collection scans only what runs allocate, instead of pausing every thread
    # for tens of milliseconds, a slot's start included, each time the runs' allocations trigger one.
    gc.collect()
    gc.freeze()
    worker.run_forever()
    return shutdown(assembly, (db, ledger_pool), config.core.shutdown_timeout)


def check_eviction(config: Config, client: redis.Redis) -> tuple[bool, str | None]:
    """Warn loudly (or refuse, with ``REDIS_EVICTION_POLICY=refuse``) when Redis may evict leases. Returns
    whether to start, and the problem found."""
    try:
        problem = eviction_problem(eviction_policy(client))
    except redis.RedisError as exc:
        log.warning("could not read Redis' eviction policy", extra=fields(error=str(exc)))
        return True, None
    metrics.REDIS_EVICTION_UNSAFE.set(1 if problem else 0)
    if problem is None:
        return True, None
    if config.core.redis_eviction_policy == "refuse":
        log.error("refusing to start: %s (REDIS_EVICTION_POLICY=refuse)", problem)
        return False, problem
    log.warning("UNSAFE REDIS: %s; starting anyway (REDIS_EVICTION_POLICY=refuse stops the worker instead)",
                problem)
    return True, problem


def check_durability(ledger: Ledger | None) -> None:
    """Warn loudly when PostgreSQL may lose its last commits in a crash: a fence issued again after a crash
    is the one thing fencing cannot survive."""
    if ledger is None:
        return
    try:
        problem = ledger.durability_problem()
    except Exception as exc:  # noqa: BLE001 - PostgreSQL down: the runs wait for it anyway
        log.warning("could not read PostgreSQL's durability settings", extra=fields(error=type(exc).__name__))
        return
    if problem:
        log.warning("UNSAFE POSTGRESQL: %s: a crash can lose the last commits, and with them issued fences and "
                    "ledger rows (a fence could then be issued twice); keep fsync and synchronous_commit on",
                    problem)


def close_dead_runs(worker: Worker, liveness: Liveness) -> None:
    """Runs that an earlier worker on this machine left open when it died (kill -9, SIGKILL after the stop
    window): free their leases (only if still theirs) and record them abandoned, so their slots can run
    again at once under the misfire policy instead of after the lease TTL."""
    ledger = worker.runner.ledger
    if ledger is None:
        return
    try:
        runs = ledger.open_runs(worker.jobs)
    except Exception as exc:  # noqa: BLE001 - PostgreSQL down: the next holders' starts close them instead
        log.warning("could not look for runs of dead workers", extra=fields(error=type(exc).__name__))
        return
    for run in runs:
        if not liveness.is_dead(run.worker):
            continue
        try:
            if run.owner:
                locks.release(worker.runner.scripts, run.job, run.owner)
            held = worker.redis.hget(keys.RUNNING, run.job)
            if held and json.loads(held).get("run_id") == run.run_id:
                worker.redis.hdel(keys.RUNNING, run.job)
            closed = ledger.reconcile(run.job, run.worker, "its worker died")
        except Exception as exc:  # noqa: BLE001 - left to the lease TTL and the takeover
            log.warning("could not close a dead worker's run", extra=fields(job=run.job, error=str(exc)))
            continue
        if closed:
            metrics.ABANDONED.labels(run.job).inc(closed)
            log.warning("closed the runs of a dead worker", extra=fields(job=run.job, worker=run.worker,
                                                                         runs=closed, slot=iso(run.slot)))


def _on_signal(worker: Worker, signum: int) -> None:
    log.info("stopping on %s", signal.Signals(signum).name)
    worker.stop()


def shutdown(assembly: Assembly, pools, timeout: float) -> int:
    worker, keeper = assembly.worker, assembly.keeper
    clock = worker.clock
    started = clock.monotonic()
    worker.runner.cancel_running("shutdown")
    finished = worker.pool.wait_idle(run_window(timeout))
    for lease in keeper.held():
        keeper.drop(lease)
        worker.runner.abandon(lease, f"did not reach a checkpoint within SHUTDOWN_TIMEOUT ({timeout:g} s)")
        metrics.ABANDONED.labels(lease.job).inc()
        log.warning("abandoned a run that did not stop in time; its lease is released", extra=fields(job=lease.job))
    # A retry still waiting (its backoff, or an outage) will not run: its slot is recorded failed, and any
    # run of this worker still open is closed, once the entries before it are written.
    worker.runner.recorder.put_close(CloseRuns(worker.runner.worker_id, "the worker stopped"))
    worker.runner.recorder.stop(max(0.0, timeout - (clock.monotonic() - started) - 0.1))
    # What is left of SHUTDOWN_TIMEOUT bounds the rest too: supervisord's stopwaitsecs is built on it.
    left = max(0.2, timeout - (clock.monotonic() - started))
    assembly.stop(left / 2)
    with contextlib.suppress(redis.RedisError, AttributeError):
        ClusterState(bounded(worker.redis, min(1.0, left / 4))).workers.forget(assembly.heartbeat.me)
    for pool in pools if finished else ():  # a stuck run holds a connection: closing would wait for it
        if pool is not None:
            pool.close(timeout=1)
    metrics.mark_dead(worker.config.core.metrics_dir)
    tracing.flush(min(tracing.FLUSH_TIMEOUT, max(0.1, timeout - (clock.monotonic() - started))))
    log.info("worker stopped", extra=fields(clean=finished, seconds=round(clock.monotonic() - started, 3)))
    if not finished:
        # A run that ignored its checkpoints is still executing; its lease is released already. Leave now
        # instead of letting interpreter shutdown wait on it (or on anything it started), so the stop keeps
        # the SHUTDOWN_TIMEOUT bound that supervisord's stopwaitsecs is built on.
        logging.shutdown()
        os._exit(0)
    return 0

