"""``appliance sidecar`` for real: gunicorn processes probed over HTTP, with dependencies that hang.

Redis hangs by SIGSTOP of the test's own redis-server (the kernel still accepts connections); PostgreSQL and
Qdrant hang as a local TCP listener that accepts and never answers (no Qdrant binary exists here).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.sidecar.server import options
from tests.services import free_port, wait_until
from tests.sidecar.load import run_load
from tests.sidecar.processes import SidecarProcess, SilentListener, process_env
from tests.worker.harness import REPO, WorkerProcess, write_jobs_file

pytestmark = pytest.mark.process


@pytest.fixture
def start_sidecar(tmp_path, sidecar_env):
    """``start_sidecar(**env_overrides)`` -> a ready ``SidecarProcess``; stopped at the end of the test."""
    started: list[SidecarProcess] = []

    def start(**overrides: str) -> SidecarProcess:
        base = {k: v for k, v in {**sidecar_env, **overrides}.items() if v is not None}
        sidecar = SidecarProcess(process_env(base), tmp_path / f"sidecar-{len(started)}.log")
        started.append(sidecar)
        return sidecar.wait_ready()

    yield start
    for sidecar in started:
        sidecar.stop()


def _healthy(cluster, jobs=("tick",)) -> None:
    for name in jobs:
        cluster.publish(name)
        cluster.run(name)
    cluster.beat(jobs=list(jobs))


def test_gunicorn_serves_probes_metrics_and_the_admin_api(start_sidecar, cluster):
    _healthy(cluster)
    sidecar = start_sidecar(SIDECAR_WORKERS="2")
    with httpx.Client(base_url=sidecar.url, timeout=5) as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert health.headers["cache-control"] == "no-store"
        assert http.get("/health/ready").json()["ready"] is True
        assert "appliance_component_up" in http.get("/metrics/prometheus").text
        assert http.get("/api/jobs").status_code == 401
        jobs = http.get("/api/jobs", headers={"Authorization": "Bearer test-admin-token-0123456789"})
        assert [job["name"] for job in jobs.json()["jobs"]] == ["tick"]
    code, _ = sidecar.terminate()
    assert code == 0


def test_health_answers_in_time_while_every_dependency_hangs(start_sidecar, cluster, redis_server):
    _healthy(cluster)
    with SilentListener() as pg, SilentListener() as qdrant:
        sidecar = start_sidecar(DATABASE_URL=f"postgresql://appliance@127.0.0.1:{pg.port}/appliance",
                                QDRANT_URL=f"http://127.0.0.1:{qdrant.port}", HEALTH_CHECK_TIMEOUT="1",
                                HEALTH_CACHE_TTL="1")
        redis_server.pause()
        try:
            with httpx.Client(base_url=sidecar.url, timeout=10) as http:
                timings = []
                for _ in range(6):
                    t0 = time.monotonic()
                    response = http.get("/health")
                    timings.append(time.monotonic() - t0)
                    assert response.status_code == 503
                    t0 = time.monotonic()
                    assert http.get("/health/live").status_code == 200
                    assert time.monotonic() - t0 < 0.2
                    time.sleep(0.3)
                body = response.json()
        finally:
            redis_server.resume()
    assert max(timings) < 1.5, timings
    assert {body["components"][name]["status"] for name in ("redis", "database", "qdrant")} == {"down"}
    assert body["status"] == "unhealthy"


def test_a_probe_flood_costs_only_a_few_dependency_checks(start_sidecar, cluster, redis_server):
    """500 probes a second for 3 s against 2 gunicorn processes with a 1 s cache: each process checks Redis
    about once a second, whatever the request rate (counted with the test Redis's own command statistics)."""
    _healthy(cluster)
    sidecar = start_sidecar(SIDECAR_WORKERS="2", SIDECAR_THREADS="4", HEALTH_CACHE_TTL="1")
    before = _redis_checks(redis_server)
    result = run_load(sidecar.url + "/health", seconds=3, threads=8, rate=500)
    checks = _redis_checks(redis_server) - before
    assert result.statuses == {200: result.requests}, result.statuses
    assert result.requests >= 750, result.rate
    # 2 processes x (3 s / 1 s + 1 for the stale-while-revalidate refresh at the end) at most.
    assert 1 <= checks <= 8, (checks, result.requests)


def _redis_checks(redis_server) -> int:
    """Redis health checks so far: each reads the dead-letter count once (ZCARD), nothing else does."""
    with redis_server.client() as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_zcard", {}).get("calls", 0))


def test_sigterm_lets_a_request_in_flight_finish(start_sidecar, cluster, redis_server):
    """A /health waiting on a hung Redis still gets its answer after SIGTERM; then gunicorn exits 0 within
    the graceful timeout (``SHUTDOWN_TIMEOUT``, at most 2 s)."""
    _healthy(cluster)
    sidecar = start_sidecar(SIDECAR_WORKERS="1", HEALTH_CACHE_TTL="0", HEALTH_CHECK_TIMEOUT="1",
                            SHUTDOWN_TIMEOUT="1")
    answers: list[int] = []
    redis_server.pause()
    try:
        thread = threading.Thread(target=lambda: answers.append(httpx.get(sidecar.url + "/health",
                                                                          timeout=5).status_code))
        thread.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        sidecar.proc.send_signal(signal.SIGTERM)
        thread.join(5)
        code = sidecar.proc.wait(5)
        elapsed = time.monotonic() - t0
    finally:
        redis_server.resume()
    assert answers == [503]
    assert code == 0 and elapsed < 1 + 1, elapsed


def test_graceful_timeout_comes_from_the_configuration(sidecar_config):
    assert options(sidecar_config(SHUTDOWN_TIMEOUT="0.5"))["graceful_timeout"] == 1
    assert options(sidecar_config(SHUTDOWN_TIMEOUT="1.5"))["graceful_timeout"] == 2
    assert options(sidecar_config(SHUTDOWN_TIMEOUT="7"))["graceful_timeout"] == 2, "capped: see GRACEFUL_CAP"
    settings = options(load_settings({"PORT": "3999", "SIDECAR_WORKERS": "3", "SIDECAR_THREADS": "5"},
                                   env_file=None))
    assert settings["bind"] == ["0.0.0.0:3999"] and settings["workers"] == 3 and settings["threads"] == 5


def test_health_follows_a_real_worker_its_jobs_and_its_heartbeat(tmp_path, app_env, sidecar_env, start_sidecar,
                                                                   cluster):
    """A real ``appliance worker`` runs ``tick`` (succeeds) and ``flaky`` (fails until told otherwise) every
    second: the dead-man's switch makes health degraded, a success makes it ok, and a SIGKILLed worker makes it
    unhealthy once its heartbeat is older than its TTL."""
    jobs_file = write_jobs_file(tmp_path / "jobs.toml", {
        "tick": {"callable": "tests.sidecar.jobs:work", "schedule": "1s"},
        "flaky": {"callable": "tests.worker.sample_jobs:flaky", "schedule": "1s", "max_retries": 0}})
    base = {**app_env, "APPLIANCE_HOME": sidecar_env["APPLIANCE_HOME"], "APPLIANCE_JOBS_FILE": str(jobs_file)}
    worker = WorkerProcess(process_env(base, JOBS_ENABLED="tick,flaky", HEARTBEAT_TTL="2"), tmp_path / "worker.log")
    try:
        worker.wait_for_log("worker started")
        sidecar = start_sidecar(HEALTH_STALE_FACTOR="2", HEALTH_CACHE_TTL="0")
        with httpx.Client(base_url=sidecar.url, timeout=5) as http:
            body = wait_until(lambda: _status(http, "degraded"), 15, "flaky stale")
            assert body["freshness"]["tick"]["status"] == "fresh"
            assert body["freshness"]["flaky"]["status"] == "stale"
            cluster.r.hset("test:param:flaky", "fail", 0)
            wait_until(lambda: _status(http, "ok"), 10, "flaky succeeding")
            worker.kill()
            t0 = time.monotonic()
            body = wait_until(lambda: _status(http, "unhealthy"), 10, "heartbeat expired")
            waited = time.monotonic() - t0
    finally:
        worker.kill()
    assert body["components"]["worker"]["status"] == "down"
    assert waited <= 2 + 1, waited


def _status(http: httpx.Client, wanted: str) -> dict | None:
    response = http.get("/health")
    body = response.json()
    assert response.status_code == (503 if body["status"] == "unhealthy" else 200)
    return body if body["status"] == wanted else None


def test_bad_configuration_exits_2_listing_every_problem(sidecar_env):
    env = process_env({**sidecar_env, "HEALTH_CHECK_TIMEOUT": "5", "SIDECAR_WORKERS": "none"})
    result = subprocess.run([sys.executable, "-m", "appliance", "sidecar"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "HEALTH_CHECK_TIMEOUT" in result.stderr and "SIDECAR_WORKERS" in result.stderr


def test_the_wsgi_module_serves_under_a_plain_gunicorn_command_line(tmp_path, sidecar_env, cluster):
    _healthy(cluster)
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - gunicorn writes to it; closed after it stops
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "appliance.sidecar.wsgi:app"],
                            env=process_env(sidecar_env), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        response = wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2), 20, "gunicorn")
        assert response.status_code == 200 and response.json()["status"] == "ok", response.text
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        log.close()
