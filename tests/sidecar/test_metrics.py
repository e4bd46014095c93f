"""``/metrics`` (seed 004's JSON) and ``/metrics/prometheus`` (checked with ``promtool check metrics``), with the
metrics of real worker processes aggregated from the multiprocess directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.kernel.protocol import keys
from appliance.kernel.protocol.outcomes import Outcome
from tests.conftest import _require
from tests.services import wait_until
from tests.sidecar import jobs as sidecar_jobs
from tests.sidecar.processes import process_env
from tests.worker.harness import REPO, WorkerProcess, write_jobs_file


def promtool_check(text: str) -> None:
    _require("promtool")
    result = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"], input=text,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted label items without pid): value}``, summed over processes (pid label)."""
    result: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid"))
            result[(sample.name, labels)] = result.get((sample.name, labels), 0.0) + sample.value
    return result


def test_json_has_seed_keys_counts_and_last_runs(client, cluster):
    for name, processed in (("campaign-scheduler", 5), ("lead-reminder-scheduler", 2), ("call-scheduler", 7),
                            ("nightly", 1)):
        cluster.publish(name)
        cluster.run(name, processed=processed)
    last = cluster.run("call-scheduler", outcome="failure", error="boom")
    cluster.state.dead_letters.add("call-scheduler", error="boom")
    cluster.beat(jobs=["call-scheduler"])
    response = client.get("/metrics")
    body = response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    assert body["jobsProcessed"] == {"campaigns": 5, "reminders": 2, "calls": 7, "nightly": 1}
    assert set(body["lastRun"]) == {"campaign", "reminder", "call", "nightly"}
    assert body["lastRun"]["call"] == last["started"]
    assert isinstance(body["uptime"], int)
    assert body["runs"]["call-scheduler"] == {"success": 1, "failure": 1, "dead_letter": 1}
    assert body["deadLetters"] == {"count": 1} and body["workers"] == 1


def test_a_lost_lease_is_counted_once_and_under_its_deprecated_names_too(client, cluster):
    """``appliance_lease_lost_total``, and ``appliance_lock_lost_total`` alike for one release; ``/metrics`` keeps
    ``runs.<job>.lock_lost`` beside ``lease_lost`` (docs/sidecar.md)."""
    metrics_dir = client.application.extensions["appliance"].metrics_dir
    program = "from appliance.kernel.runtime import metrics; metrics.count_lease_lost('tick')"
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60, cwd=REPO,
                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(REPO)})
    cluster.publish("tick")
    cluster.run("tick", outcome="lease_lost")  # counted by its outcome, in the FINISH script
    cluster.state.history.count_lease_lost("tick", Outcome.LEASE_LOST)  # so not counted again
    cluster.run("tick")  # a success whose lease was found lost at its end: counted by the runner
    cluster.state.history.count_lease_lost("tick", Outcome.SUCCESS)
    cluster.r.hset(keys.COUNTS, "tick:lock_lost", 7)  # the counter of earlier releases: superseded
    values = samples(client.get("/metrics/prometheus").get_data(as_text=True))
    assert values[("appliance_lease_lost_total", (("job", "tick"),))] == 1
    assert values[("appliance_lock_lost_total", (("job", "tick"),))] == 1
    assert client.get("/metrics").get_json()["runs"]["tick"] == {"lease_lost": 2, "success": 1, "lock_lost": 2}


def test_json_before_any_worker_published_has_the_seed_keys(client):
    body = client.get("/metrics").get_json()
    assert body["jobsProcessed"] == {"campaigns": 0, "reminders": 0, "calls": 0}
    assert body["lastRun"] == {"campaign": None, "reminder": None, "call": None}


def test_prometheus_text_passes_promtool_and_has_the_sidecar_gauges(client, cluster):
    cluster.publish("tick")
    cluster.run("tick", success_at=0.0)
    cluster.beat(jobs=["tick"])
    cluster.state.dead_letters.add("tick", error="boom")
    response = client.get("/metrics/prometheus")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    promtool_check(text)
    values = samples(text)
    assert values[("appliance_component_up", (("component", "redis"),))] == 1
    assert values[("appliance_job_stale", (("job", "tick"),))] == 1
    assert values[("appliance_health_status", ())] == 1
    assert values[("appliance_dead_letters_pending", ())] == 1
    assert values[("appliance_workers_live", ())] == 1


def test_prometheus_still_answers_when_redis_is_down(client, redis_server):
    redis_server.kill()
    text = client.get("/metrics/prometheus").get_data(as_text=True)
    promtool_check(text)
    values = samples(text)
    assert values[("appliance_component_up", (("component", "redis"),))] == 0
    assert values[("appliance_health_status", ())] == 0


@pytest.mark.process
def test_metrics_of_two_worker_processes_are_aggregated(tmp_path, app_env, sidecar_env, make_client, cluster):
    """Two real ``appliance worker`` processes run one job each; the sidecar reads their multiprocess files."""
    jobs_file = write_jobs_file(tmp_path / "jobs.toml", {
        name: {"callable": "tests.sidecar.jobs:work", "schedule": "1h"} for name in ("alpha", "beta")})
    base = {**app_env, "APPLIANCE_HOME": sidecar_env["APPLIANCE_HOME"], "APPLIANCE_JOBS_FILE": str(jobs_file)}
    workers = [WorkerProcess(process_env(base, JOBS_ENABLED=name), tmp_path / f"{name}.log")
               for name in ("alpha", "beta")]
    try:
        for worker in workers:
            worker.wait_for_log("worker started")
        for name in ("alpha", "beta", "alpha"):
            cluster.state.triggers.request(name, by="test")
        wait_until(lambda: cluster.state.history.counts().get("alpha:success") == 2
                   and cluster.state.history.counts().get("beta:success") == 1, 20, "three runs")
        client = make_client()
        text = client.get("/metrics/prometheus").get_data(as_text=True)
        body = client.get("/metrics").get_json()
        worker_pids = {str(w.pid) for w in workers}
    finally:
        for worker in workers:
            worker.terminate()
    promtool_check(text)
    values = samples(text)
    assert values[("appliance_job_runs_total", (("job", "alpha"), ("outcome", "success")))] == 2
    assert values[("appliance_job_runs_total", (("job", "beta"), ("outcome", "success")))] == 1
    assert values[("appliance_items_processed_total", (("job", "alpha"),))] == 2 * sidecar_jobs.PROCESSED
    assert values[("appliance_job_duration_seconds_count", (("job", "beta"),))] == 1
    assert values[("appliance_job_last_success_timestamp_seconds", (("job", "alpha"),))] > 0
    assert values[("appliance_backlog", (("kind", "queued_calls"),))] == sidecar_jobs.QUEUED_CALLS
    rss_pids = {s.labels["pid"] for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "appliance_process_resident_memory_bytes" and s.labels["process"] == "worker"}
    assert worker_pids <= rss_pids
    assert body["backlog"] == {"queued_calls": sidecar_jobs.QUEUED_CALLS}
    assert body["jobsProcessed"]["alpha"] == 2 * sidecar_jobs.PROCESSED
    assert body["runs"]["beta"]["success"] == 1


def test_json_answers_in_time_with_a_503_while_redis_hangs(make_client, cluster, redis_server):
    """A SIGSTOPped redis-server accepts connections and never replies."""
    cluster.publish("tick")
    client = make_client(HEALTH_CHECK_TIMEOUT="0.5")
    redis_server.pause()
    try:
        t0 = time.monotonic()
        response = client.get("/metrics")
        elapsed = time.monotonic() - t0
    finally:
        redis_server.resume()
    assert response.status_code == 503 and response.get_json()["error"] == "service_unavailable"
    assert elapsed < 1.0, elapsed
