"""``/metrics`` (seed 004's JSON, plus more) and ``/metrics/prometheus`` (text exposition).

The Prometheus text aggregates what every appliance process wrote to the multiprocess directory
(``$APPLIANCE_HOME/metrics``: the worker's runs, durations, retries, dead letters, backlog, CPU and RSS) and
adds what only the sidecar knows, computed at scrape time from the cached health checks: component status,
overall health, the free space of APPLIANCE_HOME's filesystem, the dead-man's switch per job, live workers and
heartbeat ages, pending dead letters, circuit breakers, pause-all, uptime.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from werkzeug.exceptions import ServiceUnavailable

from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime import metrics as worker_metrics
from appliance.sidecar.checks import Snapshot, Status

STATUS_VALUE = {Status.DOWN.value: 0, Status.DEGRADED.value: 1, Status.UP.value: 2}
HEALTH_VALUE = {"unhealthy": 0, "degraded": 1, "ok": 2}
BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}
#: Deprecated: ``runs.<job>.lease_lost`` under its old name, served alike for one release (docs/sidecar.md); the
#: counter Redis kept under it before is superseded.
LOCK_LOST_ALIAS = "lock_lost"

bp = Blueprint("metrics", __name__)


class SidecarCollector(Collector):
    """Gauges computed from the sidecar's (cached) health report at scrape time."""

    def __init__(self, sidecar: Any):
        self.sidecar = sidecar

    def collect(self) -> Iterator[Metric]:
        monitor = self.sidecar.monitor
        report, snapshot = monitor.evaluate()
        up = GaugeMetricFamily("appliance_component_up", "1 when the component answers its check, else 0.",
                               labels=["component"])
        status = GaugeMetricFamily("appliance_component_status", "Component status: 0 down, 1 degraded, 2 up.",
                                   labels=["component"])
        for name, component in report["components"].items():
            up.add_metric([name], 0 if component["status"] == Status.DOWN.value else 1)
            status.add_metric([name], STATUS_VALUE[component["status"]])
        yield up
        yield status
        yield GaugeMetricFamily("appliance_health_status", "Overall health: 0 unhealthy, 1 degraded, 2 ok.",
                                value=HEALTH_VALUE[report["status"]])
        yield GaugeMetricFamily("appliance_sidecar_uptime_seconds", "Seconds since the sidecar started.",
                                value=monitor.uptime())
        yield from self._disk(report["disk"])
        yield from self._jobs(report, snapshot)
        if snapshot:
            yield from self._cluster(snapshot)

    def _disk(self, disk: dict[str, Any]) -> Iterator[Metric]:
        """APPLIANCE_HOME's filesystem, as the (cached) disk check last saw it; nothing when it could not look."""
        if "free_bytes" not in disk:
            return
        yield GaugeMetricFamily("appliance_disk_free_bytes", "Free bytes on APPLIANCE_HOME's filesystem (what an "
                                "unprivileged process may use).", value=disk["free_bytes"])
        yield GaugeMetricFamily("appliance_disk_size_bytes", "Size of APPLIANCE_HOME's filesystem in bytes.",
                                value=disk["total_bytes"])
        yield GaugeMetricFamily("appliance_disk_warn_below_bytes", "DISK_FREE_WARN in bytes: /health is degraded "
                                "below it.", value=disk["warn_below_bytes"])
        yield GaugeMetricFamily("appliance_disk_full", "1 while APPLIANCE_HOME's filesystem is full (too little room "
                                "for PostgreSQL to restart, or no free inode).", value=int(disk["status"] == "full"))
        if disk["free_inodes"] is not None:
            yield GaugeMetricFamily("appliance_disk_free_inodes", "Free inodes on APPLIANCE_HOME's filesystem.",
                                    value=disk["free_inodes"])

    def _jobs(self, report: dict[str, Any], snapshot: Snapshot | None) -> Iterator[Metric]:
        stale = GaugeMetricFamily("appliance_job_stale", "Dead-man's switch: 1 when the job has not succeeded "
                                  "within HEALTH_STALE_FACTOR times its period.", labels=["job"])
        running = GaugeMetricFamily("appliance_job_running", "1 while a run of the job is in progress.",
                                    labels=["job"])
        paused = GaugeMetricFamily("appliance_job_paused", "1 while the job is paused cluster-wide.", labels=["job"])
        for job, entry in report["freshness"].items():
            stale.add_metric([job], 1 if entry["status"] == "stale" else 0)
            paused.add_metric([job], 1 if entry["status"] == "paused" else 0)
        for job in snapshot.jobs if snapshot else []:
            running.add_metric([job.name], 1 if job.running else 0)
        yield from (stale, running, paused)

    def _cluster(self, snapshot: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily("appliance_workers_live", "Workers whose heartbeat is present in Redis.",
                                value=len(snapshot.workers))
        ages = GaugeMetricFamily("appliance_worker_heartbeat_age_seconds", "Age of each live worker's heartbeat.",
                                 labels=["worker"])
        for worker in snapshot.workers:
            ages.add_metric([worker.id], round(worker.heartbeat_age, 3))
        yield ages
        yield GaugeMetricFamily("appliance_dead_letters_pending", "Dead letters waiting for retry or drop.",
                                value=snapshot.dead_letters)
        breakers = GaugeMetricFamily("appliance_breaker_state", "Circuit breaker state: 0 closed, 1 half-open "
                                     "(the next call is the trial one), 2 open.", labels=["breaker"])
        for breaker in snapshot.breakers:
            breakers.add_metric([breaker.name], BREAKER_VALUE[breaker.state])
        yield breakers
        yield GaugeMetricFamily("appliance_scheduler_paused", "1 while every job is paused (pause-all).",
                                value=1 if snapshot.paused_all else 0)


def build_registry(sidecar: Any) -> CollectorRegistry:
    """A registry of the multiprocess files in ``sidecar.metrics_dir`` plus the sidecar's own gauges."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(sidecar.metrics_dir))
    registry.register(SidecarCollector(sidecar))
    return registry


def _registry() -> CollectorRegistry:
    sidecar = current_app.extensions["appliance"]
    if sidecar.registry is None:
        sidecar.registry = build_registry(sidecar)
    return sidecar.registry


def backlog(sidecar: Any) -> dict[str, float]:
    """``appliance_backlog{kind}`` as the job pack last set it, read from the multiprocess files."""
    collector = MultiProcessCollector(None, path=str(sidecar.metrics_dir))
    result = {}
    for metric in collector.collect():
        if metric.name == "appliance_backlog":
            for sample in metric.samples:
                result[sample.labels["kind"]] = sample.value
    return result


@bp.get("/metrics/prometheus")
def prometheus() -> Response:
    worker_metrics.sample_process("sidecar")
    return Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


@bp.get("/metrics")
def metrics_json() -> Response:
    """Seed 004's ``jobsProcessed``, ``lastRun`` and ``uptime``; plus runs by outcome, dead letters, backlog.

    Served from the cached Redis health check, so it answers as fast as ``/health`` whatever Redis does; 503
    while that check fails."""
    sidecar = current_app.extensions["appliance"]
    _, snapshot = sidecar.monitor.evaluate()
    if snapshot is None:
        raise ServiceUnavailable("Redis is unavailable, so the job counters cannot be read; try again shortly")
    counts, jobs = snapshot.counts, snapshot.jobs
    names = sorted({job.name for job in jobs} | {key.rsplit(":", 1)[0] for key in counts})
    # Seed 004's keys for the packs' jobs that have them; every other job appears under its own name.
    processed_keys = {job: seed.processed for job, seed in sidecar.monitor.seed_names.items()}
    last_run_keys = {job: seed.last_run for job, seed in sidecar.monitor.seed_names.items()}
    processed = {key: 0 for key in processed_keys.values()}
    processed.update({processed_keys.get(n, n): counts.get(f"{n}:processed", 0) for n in names})
    last_run: dict[str, str | None] = {key: None for key in last_run_keys.values()}
    last_run.update({last_run_keys.get(j.name, j.name): j.last_run.started if j.last_run else None for j in jobs})
    runs: dict[str, dict[str, int]] = {name: {} for name in names}
    for key, value in counts.items():
        job, _, outcome = key.rpartition(":")
        if outcome not in ("processed", LOCK_LOST_ALIAS):
            runs.setdefault(job, {})[outcome] = value
    for outcomes in runs.values():
        if Outcome.LEASE_LOST.value in outcomes:
            outcomes[LOCK_LOST_ALIAS] = outcomes[Outcome.LEASE_LOST.value]
    body = {
        "jobsProcessed": processed,
        "lastRun": last_run,
        "uptime": sidecar.monitor.uptime(),
        "timestamp": iso(sidecar.monitor.clock.now()),
        "runs": runs,
        "deadLetters": {"count": snapshot.dead_letters},
        "workers": len(snapshot.workers),
        "backlog": backlog(sidecar),
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response
