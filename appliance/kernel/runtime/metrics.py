"""Prometheus metrics written by the worker and read by the sidecar.

The worker and the sidecar's gunicorn workers are separate processes, so prometheus_client runs in its
multiprocess mode: the entry point sets ``PROMETHEUS_MULTIPROC_DIR`` (``$APPLIANCE_HOME/metrics``) before the
first metric is used, each process writes its own files there, and the sidecar aggregates them. Every metric is
built on its first use (``lazy``), not when this module is imported: prometheus_client reads the directory when
a metric is made, so importing this module early (any job module may) changes nothing. Their blocks are
allocated before they are written (``appliance.kernel.runtime.metric_files``), so a full disk never kills a
process. A pack defines its own metrics the same way (``appliance.sdk.lazy_metric``).
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_BUILD = threading.Lock()


class Lazy(Generic[T]):
    """A metric made on its first use; every attribute is the metric's."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._made: T | None = None

    def get(self) -> T:
        if self._made is None:
            with _BUILD:
                if self._made is None:
                    # prometheus_client is imported here, not before (it reads the directory when imported).
                    # Before the first metric: a full disk must not turn a metric's first write into SIGBUS.
                    from appliance.kernel.runtime import metric_files

                    metric_files.install()
                    self._made = self._make()
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


def lazy(kind: str, name: str, documentation: str, labels: tuple[str, ...] = (), **options: Any) -> Lazy[Any]:
    """A ``Counter``, ``Gauge`` or ``Histogram`` of prometheus_client, made on its first use."""

    def make() -> Any:
        import prometheus_client

        return getattr(prometheus_client, kind)(name, documentation, list(labels), **options)

    return Lazy(make)


JOB_RUNS = lazy("Counter", "appliance_job_runs", "Slots and runs by job and outcome.", ("job", "outcome"))
JOB_DURATION = lazy(
    "Histogram", "appliance_job_duration_seconds", "Duration of job runs.", ("job",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
LAST_SUCCESS = lazy("Gauge", "appliance_job_last_success_timestamp_seconds", "Unix time of the last successful run.",
                    ("job",), multiprocess_mode="max")
LEASE_LOST = lazy("Counter", "appliance_lease_lost", "Runs whose lease was lost while running.", ("job",))
#: Deprecated: ``appliance_lease_lost_total`` under its old name, counted alike for one release (docs/sidecar.md).
LOCK_LOST = lazy("Counter", "appliance_lock_lost", "Deprecated: appliance_lease_lost_total under its old name.",
                 ("job",))
RETRIES = lazy("Counter", "appliance_job_retries", "Retries scheduled after a failed run.", ("job",))
DEAD_LETTERS = lazy("Counter", "appliance_dead_letters", "Runs moved to the dead-letter list after the last retry.",
                    ("job",))
ITEMS = lazy("Counter", "appliance_items_processed", "Items of work done by runs (seed 004's jobsProcessed).",
             ("job",))
SCHEDULE_LAG = lazy("Histogram", "appliance_schedule_lag_seconds", "Delay between a slot's time and its run's start.",
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))
BACKLOG = lazy("Gauge", "appliance_backlog", "Work waiting, by kind (named by the job that reports it): what an "
               "autoscaler scales on.", ("kind",), multiprocess_mode="mostrecent")
PROCESS_RSS = lazy("Gauge", "appliance_process_resident_memory_bytes", "Resident memory of an appliance process.",
                   ("process",), multiprocess_mode="liveall")
PROCESS_CPU = lazy("Gauge", "appliance_process_cpu_seconds", "CPU time used by an appliance process.",
                   ("process",), multiprocess_mode="liveall")
LEDGER_DROPPED = lazy("Counter", "appliance_ledger_dropped", "Ledger entries dropped while PostgreSQL stayed down "
                      "(the gap is recorded as missed at the next start).")
ABANDONED = lazy("Counter", "appliance_runs_abandoned", "Runs closed as abandoned: their worker died or was cut off.",
                 ("job",))
REDIS_EVICTION_UNSAFE = lazy("Gauge", "appliance_redis_eviction_unsafe", "1 when Redis' maxmemory-policy may evict "
                             "lock keys (anything but noeviction).", multiprocess_mode="max")
BREAKER_TRANSITIONS = lazy("Counter", "appliance_breaker_transitions", "Changes of state of a circuit breaker, by "
                           "breaker and the state it changed to (counted once cluster-wide).", ("breaker", "state"))
CLOCK_OFFSET = lazy("Gauge", "appliance_clock_offset_seconds", "The worker's wall clock minus Redis' clock (TIME), "
                    "measured at every heartbeat: positive when it is ahead (it reaches its slots early).",
                    multiprocess_mode="mostrecent")
WORKER_START = lazy("Gauge", "appliance_worker_start_time_seconds", "Unix time the worker process started.",
                    multiprocess_mode="max")


def count_lease_lost(job: str) -> None:
    """A run of ``job`` lost its lease: counted under the new name and the deprecated one."""
    LEASE_LOST.labels(job).inc()
    LOCK_LOST.labels(job).inc()


def sample_process(name: str) -> tuple[float, float]:
    """Record this process's RSS (bytes) and CPU seconds under ``process=name``; returns both."""
    rss = _rss_bytes()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    PROCESS_RSS.labels(name).set(rss)
    PROCESS_CPU.labels(name).set(cpu)
    return rss, cpu


def _rss_bytes() -> float:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def mark_dead(directory) -> None:
    """Drop this process's live gauges from the multiprocess files in ``directory`` (call on clean exit)."""
    if os.path.isdir(directory):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), str(directory))
