"""``/health``, ``/health/live`` and ``/health/ready`` against a real Redis and PostgreSQL (in-process app)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from appliance.kernel.protocol.state.jobs import JobView, PublishedJob
from appliance.kernel.runtime.freshness import freshness
from tests.services import free_port

SEED_JOBS = ("campaign-scheduler", "lead-reminder-scheduler", "call-scheduler")


def healthy_cluster(cluster, jobs=(*SEED_JOBS, "nightly-report")):
    for name in jobs:
        cluster.publish(name)
        cluster.run(name, processed=2)
    cluster.beat(jobs=list(jobs))


def test_all_up_is_ok_with_seed_keys_and_detail(client, cluster):
    healthy_cluster(cluster)
    response = client.get("/health")
    body = response.get_json()
    assert response.status_code == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    assert body["status"] == "ok"
    assert body["services"] == {"redis": "connected", "database": "connected", "qdrant": "embedded"}
    assert body["jobs"] == {"campaign": False, "leadReminder": False, "callScheduler": False, "nightly-report": False}
    assert isinstance(body["uptime"], int) and body["timestamp"].endswith("Z")
    for name in ("redis", "database", "worker", "qdrant"):
        assert body["components"][name]["status"] == "up", body["components"][name]
    assert body["components"]["redis"]["latency_ms"] > 0
    assert "embedded Qdrant Edge" in body["components"]["qdrant"]["message"]
    assert {entry["status"] for entry in body["freshness"].values()} == {"fresh"}


def test_jobs_show_a_run_in_progress(client, cluster):
    healthy_cluster(cluster)
    run = cluster.start_run("call-scheduler")
    assert client.get("/health").get_json()["jobs"]["callScheduler"] is True
    cluster.finish_run("call-scheduler", run)
    assert client.get("/health").get_json()["jobs"]["callScheduler"] is False


def test_missing_heartbeat_is_unhealthy(client, cluster):
    healthy_cluster(cluster)
    cluster.state.workers.forget(cluster.beat(jobs=list(SEED_JOBS)))
    cluster.beat(jobs=list(SEED_JOBS), host="other-host", pid=7)
    response = client.get("/health")
    body = response.get_json()
    assert response.status_code == 503
    assert body["status"] == "unhealthy"
    assert body["components"]["worker"]["status"] == "down"
    assert "1 live worker(s) elsewhere" in body["components"]["worker"]["message"]


def test_heartbeat_older_than_its_ttl_is_unhealthy(client, cluster, clock):
    """The age of the newest heartbeat decides, up to and including its TTL (the key itself, with a real 30 s
    expiry, is still in Redis: this is the sidecar's own judgement of a worker that stopped beating)."""
    for name in SEED_JOBS:
        cluster.publish(name)
        cluster.run(name)
    cluster.beat(jobs=list(SEED_JOBS), ttl=30)
    assert client.get("/health").get_json()["status"] == "ok"
    clock.advance(30)
    assert client.get("/health").get_json()["components"]["worker"]["status"] == "up"
    clock.advance(0.001)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.get_json()["components"]["worker"]["status"] == "down"


def test_without_a_local_worker_any_live_worker_will_do(make_client, cluster):
    client = make_client(IS_WORKER="false")
    healthy_cluster(cluster)
    cluster.state.workers.forget(cluster.beat(jobs=list(SEED_JOBS)))
    body = client.get("/health").get_json()
    assert body["components"]["worker"]["status"] == "degraded"
    assert body["status"] == "degraded"
    cluster.beat(jobs=list(SEED_JOBS), host="worker-host", pid=9)
    body = client.get("/health").get_json()
    assert body["status"] == "ok", body["components"]["worker"]


def test_dead_mans_switch_makes_a_stale_job_degraded(make_client, cluster, clock):
    healthy_cluster(cluster)
    cluster.run("call-scheduler", success_at=clock.time() - 200)  # 200 s ago, period 30 s, k = 3
    response = make_client().get("/health")
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "degraded"
    stale = body["freshness"]["call-scheduler"]
    assert stale["status"] == "stale" and stale["allowed_seconds"] == 90 and stale["age_seconds"] >= 199
    assert body["freshness"]["campaign-scheduler"]["status"] == "fresh"
    assert make_client(HEALTH_STALE_FACTOR="10").get("/health").get_json()["status"] == "ok"


def test_a_paused_job_is_never_stale(client, cluster, clock):
    healthy_cluster(cluster)
    cluster.run("call-scheduler", success_at=clock.time() - 500)
    cluster.state.pauses.pause("call-scheduler", by="test")
    body = client.get("/health").get_json()
    assert body["freshness"]["call-scheduler"]["status"] == "paused"
    assert body["status"] == "ok"


def test_a_job_that_never_succeeded_is_measured_from_its_worker_start(client, cluster, clock):
    # Every 30 s, k = 3: stale once a slot at least 90 s back lies after the worker's start, which takes
    # between 90 and 120 s depending on where the start falls on the 30 s grid.
    cluster.publish("never-ok")
    started = clock.time()
    cluster.beat(jobs=["never-ok"], started=started)
    clock.advance(90)
    cluster.beat(jobs=["never-ok"], started=started)
    assert client.get("/health").get_json()["freshness"]["never-ok"]["status"] == "fresh"
    clock.advance(30.001)
    cluster.beat(jobs=["never-ok"], started=started)
    body = client.get("/health").get_json()
    assert body["freshness"]["never-ok"]["status"] == "stale"
    assert body["status"] == "degraded"


def test_a_worker_whose_clock_is_off_past_the_threshold_degrades_health_naming_it(make_client, cluster):
    """Each heartbeat carries the offset its worker measured against Redis' clock: one past CLOCK_SKEW_WARN
    (either way) makes /health degraded, not unhealthy, and the clock component names that worker."""
    healthy_cluster(cluster)
    cluster.beat(jobs=list(SEED_JOBS), clock_offset=0.004)
    cluster.beat(jobs=list(SEED_JOBS), host="ahead-host", pid=7, clock_offset=2.5)
    cluster.beat(jobs=list(SEED_JOBS), host="behind-host", pid=8, clock_offset=-0.4)
    response = make_client().get("/health")
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "degraded", body
    clock = body["components"]["clock"]
    assert clock["status"] == "degraded" and "ahead-host:7 +2.500s" in clock["message"], clock
    assert "behind-host" not in clock["message"]
    assert body["clocks"]["ahead-host:7"] == {"offset_seconds": 2.5, "error_seconds": 0.0002, "skewed": True}
    assert body["clocks"]["behind-host:8"]["skewed"] is False
    # Behind by as much is as far off; within a larger threshold every clock is fine.
    cluster.beat(jobs=list(SEED_JOBS), host="ahead-host", pid=7, clock_offset=-2.5)
    assert "ahead-host:7 -2.500s" in make_client().get("/health").get_json()["components"]["clock"]["message"]
    relaxed = make_client(CLOCK_SKEW_WARN="3s").get("/health").get_json()
    assert relaxed["status"] == "ok" and relaxed["components"]["clock"]["status"] == "up", relaxed["components"]


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("now", "last_success", "expected"), [
    ("2026-03-10T08:30", "2026-03-09T19:00:05", "fresh"),   # quiet night: the 19:00 run was the last slot
    ("2026-03-10T10:30", "2026-03-09T19:00:05", "fresh"),   # 08:00, 09:00, 10:00 missed: not yet k=3 periods
    ("2026-03-10T11:30", "2026-03-09T19:00:05", "stale"),   # the 08:00 slot is now 3 periods back
    ("2026-03-10T10:30", "2026-03-09T18:00:05", "stale"),   # the evening's last slot, 19:00, was missed too
    ("2026-03-10T11:30", "2026-03-10T08:00:02", "fresh"),
])
def test_windowed_schedules_do_not_go_stale_overnight(now, last_success, expected):
    published = PublishedJob("sync", schedule="every 1h between 08:00-20:00", timezone="UTC", period_seconds=3600)
    job = JobView(published, paused=False, paused_by=None, running=None, last_run=None,
                  last_success=last_success + "Z", lease_holder=None)
    result = freshness([job], [], _utc(now), factor=3.0)
    assert result["sync"].status == expected


def test_redis_down_is_unhealthy_and_live_still_answers(client, cluster, redis_server):
    healthy_cluster(cluster)
    redis_server.kill()
    response = client.get("/health")
    body = response.get_json()
    assert response.status_code == 503
    assert body["services"]["redis"] == "disconnected"
    assert body["components"]["redis"]["status"] == "down"
    assert "ConnectionError" in body["components"]["redis"]["message"]
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 503


def test_database_down_is_unhealthy(make_client, cluster):
    healthy_cluster(cluster)
    client = make_client(DATABASE_URL=f"postgresql://appliance@127.0.0.1:{free_port()}/appliance")
    response = client.get("/health")
    body = response.get_json()
    assert response.status_code == 503
    assert body["services"]["database"] == "disconnected"
    assert "connection" in body["components"]["database"]["message"].lower()


def test_hung_redis_answers_within_the_deadline_and_live_does_no_io(make_client, cluster, redis_server):
    """A SIGSTOPped redis-server accepts connections (the kernel does) and never replies."""
    healthy_cluster(cluster)
    client = make_client(HEALTH_CHECK_TIMEOUT="0.5")
    redis_server.pause()
    try:
        t0 = time.monotonic()
        assert client.get("/health/live").status_code == 200
        assert time.monotonic() - t0 < 0.1
        t0 = time.monotonic()
        response = client.get("/health")
        elapsed = time.monotonic() - t0
    finally:
        redis_server.resume()
    assert response.status_code == 503
    assert elapsed < 1.0, elapsed
    assert response.get_json()["components"]["redis"]["status"] == "down"


class _Qdrant(BaseHTTPRequestHandler):
    """A local HTTP server speaking Qdrant's ``/readyz`` (the Qdrant binary is not available in tests)."""

    status = 200
    seen_keys: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).seen_keys.append(self.headers.get("api-key", ""))
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def qdrant_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Qdrant)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_qdrant_server_is_probed_and_its_failure_only_degrades(make_client, cluster, qdrant_server):
    healthy_cluster(cluster)
    url = f"http://127.0.0.1:{qdrant_server.server_port}"
    client = make_client(QDRANT_URL=url, QDRANT_API_KEY="qdrant-key-123")
    body = client.get("/health").get_json()
    assert body["services"]["qdrant"] == "healthy" and body["status"] == "ok"
    assert _Qdrant.seen_keys[-1] == "qdrant-key-123"
    _Qdrant.status = 503
    try:
        response = client.get("/health")
    finally:
        _Qdrant.status = 200
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "degraded" and body["services"]["qdrant"] == "unhealthy"
    assert "503" in body["components"]["qdrant"]["message"]


def test_checks_are_cached_so_probe_floods_cost_few_checks(make_client, cluster, redis_server):
    healthy_cluster(cluster)
    client = make_client(HEALTH_CACHE_TTL="5")
    before = _checks(redis_server)
    for _ in range(200):
        assert client.get("/health").status_code == 200
    assert _checks(redis_server) - before == 1


def _checks(redis_server) -> int:
    """Redis health checks so far: each reads the dead-letter count once (ZCARD), nothing else does."""
    with redis_server.client() as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_zcard", {}).get("calls", 0))


def test_ready_is_200_when_ok(client, cluster):
    healthy_cluster(cluster)
    response = client.get("/health/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["ready"] is True and body["components"]["redis"] == "up"
    assert response.headers["Cache-Control"] == "no-store"


def test_health_tells_which_embedder_the_indexer_uses(make_client, cluster):
    healthy_cluster(cluster)
    body = make_client().get("/health").get_json()
    assert body["knowledge"]["embedder"] == "local" and body["knowledge"]["offline"] is True
    body = make_client(OPENAI_API_KEY="sk-test-key-123456").get("/health").get_json()
    assert body["knowledge"]["embedder"] == "openai" and "sk-test" not in str(body)
