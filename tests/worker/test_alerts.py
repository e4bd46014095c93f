"""Alert levels (seed 003: critical, warning, info) against a real redis-server, each sent once per change of
state even with two replicas' alerters: intermittent failures, a stale job, an open breaker, an unsafe eviction
policy. Deliveries go to a local webhook server."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from appliance.config.core import AlertConfig
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.jobs import PublishedJob
from appliance.kernel.runtime.breaker import CircuitBreaker
from appliance.kernel.runtime.clock import SteppedClock
from appliance.worker.alerts import Alerter
from tests.services import wait_until


def alert_config(**overrides) -> AlertConfig:
    base = dict(enabled=True, critical_threshold=3, slack_enabled=False, slack_webhook_url="", slack_channel="",
                webhook_url="", warning_threshold=5, warning_window=3600.0, check_interval=0.0, stale_factor=3.0)
    return AlertConfig(**{**base, **overrides})


def sent(caplog) -> list[tuple[str, str]]:
    return [(r.fields["severity"], r.fields["alert"]) for r in caplog.records if r.name == "appliance.alerts"]


def succeed(alerter: Alerter, job: str) -> None:
    """A success as the runner reports it: its finish script ends the streak and says whether the job's
    "failing often" warning is on (``locks.finish``)."""
    streak = int(alerter.client.hget("appliance:alerts", job) or 0)
    alerter.client.hdel("appliance:alerts", job)
    warned = alerter.client.hget("appliance:alert-states", f"intermittent:{job}") == "warning"
    alerter.succeeded(job, streak, warned)


@pytest.fixture
def replicas(redis_server):
    clock = SteppedClock(datetime.now(UTC))
    return clock, [Alerter(redis_server.client(), alert_config(), clock=clock) for _ in range(2)]


def test_failures_that_keep_coming_below_critical_warn_once_then_resolve(replicas, caplog):
    caplog.set_level(logging.INFO, logger="appliance.alerts")
    clock, (a, b) = replicas
    for step, alerter in enumerate((a, b, a, b, a, b, a, b, a, b, a)):
        clock.advance(60)
        if step % 3 == 2:
            succeed(alerter, "sync")  # successes in between keep the streak below critical
        else:
            alerter.failed("sync", "HTTP 502")
    assert sent(caplog) == [("warning", "warning")], "five failures within the hour: one warning, not more"
    assert "failed 5 times within 3600s (latest: HTTP 502)" in caplog.records[0].getMessage()
    clock.advance(3600)
    succeed(b, "sync")
    succeed(a, "sync")
    assert sent(caplog) == [("warning", "warning"), ("info", "resolved")]


def test_a_streak_reaching_critical_is_critical_not_warning(replicas, caplog):
    caplog.set_level(logging.INFO, logger="appliance.alerts")
    clock, (a, b) = replicas
    for alerter in (a, b, a, b, a, b):
        clock.advance(1)
        alerter.failed("sync", "boom")
    succeed(a, "sync")
    assert sent(caplog) == [("critical", "critical"), ("info", "recovered")]


def test_stale_job_open_breaker_and_unsafe_eviction_warn_once_and_resolve(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="appliance.alerts")
    client = redis_server.client()
    state = ClusterState(client)
    now = time.time()
    state.jobs.publish([PublishedJob("sync", schedule="1m", period_seconds=60.0, timezone="UTC", enabled=True)])
    client.hset("appliance:last-success", "sync", now - 600)  # ten periods ago: past the dead-man's switch
    breaker = CircuitBreaker("whatsapp", threshold=1, reset_after=300, client=client)
    breaker.record_failure()
    client.config_set("maxmemory-policy", "allkeys-lru")
    replicas = [Alerter(redis_server.client(), alert_config()) for _ in range(2)]
    for alerter in replicas * 2:
        alerter.check()
    warnings = sorted(r.fields["condition"] for r in caplog.records if r.fields.get("severity") == "warning")
    assert warnings == ["breaker:whatsapp", "eviction", "stale:sync"]

    client.hset("appliance:last-success", "sync", time.time())
    breaker.record_success()
    client.config_set("maxmemory-policy", "noeviction")
    for alerter in replicas * 2:
        alerter.check()
    infos = sorted(r.fields["condition"] for r in caplog.records if r.fields.get("severity") == "info")
    assert infos == ["breaker:whatsapp", "eviction", "stale:sync"]


def test_a_paused_scheduler_makes_no_job_late(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="appliance.alerts")
    client = redis_server.client()
    ClusterState(client).jobs.publish([PublishedJob("sync", schedule="1m", period_seconds=60.0)])
    client.hset("appliance:last-success", "sync", time.time() - 600)
    ClusterState(client).pauses.pause_all("test")
    Alerter(client, alert_config()).check()
    assert sent(caplog) == []


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self):
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_watch_starts_with_the_first_run_and_delivers_the_warning(redis_server):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    client = redis_server.client()
    client.config_set("maxmemory-policy", "volatile-lru")
    alerter = Alerter(client, alert_config(check_interval=0.2,
                                           webhook_url=f"http://127.0.0.1:{server.server_port}/hook"))
    try:
        assert "alert-watch" not in _threads(), "no watch before the worker ran anything"
        alerter.succeeded("sync", streak=0)
        assert "alert-watch" in _threads()
        wait_until(lambda: _Hook.received, 5, "the eviction warning")
        # Each check runs the eviction condition's script once (no job or breaker here): two more checks, and
        # still one warning.
        checks = _script_calls(client)
        wait_until(lambda: _script_calls(client) >= checks + 2, 5, "two more checks")
        (warning,) = _Hook.received
        assert warning["severity"] == "warning" and warning["condition"] == "eviction"
        assert "volatile-lru" in warning["message"]
    finally:
        alerter.close()
        server.shutdown()
        server.server_close()


def _threads() -> set[str]:
    return {thread.name for thread in threading.enumerate()}


def _script_calls(client) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

