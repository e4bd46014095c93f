"""The circuit breaker that remembers: its state lives in a real redis-server, so it holds across runs and
replicas. The provider is the local provider server (tests/packs/crm/providers.py) answering 503 to everything;
real providers cannot be reached here."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading

import pytest

from appliance.kernel.contract.context import CancelToken
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime.breaker import BreakerState, CircuitBreaker, CircuitOpen
from appliance.kernel.runtime.clock import SYSTEM, SteppedClock
from appliance.packs.crm.jobs import campaigns
from tests.packs.crm.data import campaign, phones, recipient_states, tenant

ALWAYS_503 = [(503, {"Retry-After": "0"})] * 1000
SETTINGS = {"WHATSAPP_CHANNEL": "http", "WHATSAPP_API_TOKEN": "test-token", "PROVIDER_MAX_RETRIES": "3",
            "PROVIDER_BREAKER_THRESHOLD": "5", "PROVIDER_BREAKER_RESET": "1", "CAMPAIGN_BATCH_DELAY": "0",
            "CAMPAIGN_RATE_LIMIT": "0", "CAMPAIGN_RETRY_BACKOFF": "0", "CAMPAIGN_MAX_ATTEMPTS": "20"}


def opened_lines(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "appliance.breaker" and getattr(r, "fields", {}).get("breaker") == name
            and r.fields.get("state") == "open"]


def test_a_second_run_does_not_send_again_before_the_breaker_lets_one_trial_through(
        make_ctx, sql, provider, redis_server, caplog):
    """Five recipients, three retries each: the first run sends 20 requests and opens the breaker; the next
    run finds it open and sends none; after the reset time one run sends exactly one trial request. The runs
    share one stepped clock, so "after the reset time" is a step, not a sleep."""
    caplog.set_level(logging.INFO, logger="appliance.breaker")
    provider.plan = list(ALWAYS_503)
    c = campaign(sql, tenant(sql), phones(5), channel="whatsapp")
    client = redis_server.client()
    clock = SteppedClock(SYSTEM.now())

    def run() -> int:
        before = len(provider.requests)
        ctx = make_ctx("campaign-scheduler", WHATSAPP_API_URL=provider.url, **SETTINGS)
        campaigns.run(dataclasses.replace(ctx, redis=client, cancel=CancelToken(clock)))
        return len(provider.requests) - before

    assert run() == 20
    assert ClusterState(client, clock).breakers.views()[0].state == "open"
    assert run() == 0, "the breaker opened by the first run is still open in the second"
    clock.advance(0.999)
    assert run() == 0
    clock.advance(0.001)  # PROVIDER_BREAKER_RESET=1 (s) since it opened
    assert run() == 1, "half-open: one trial request, without retries"
    assert run() == 0
    (whatsapp,) = ClusterState(client, clock).breakers.views()
    assert whatsapp.name == "whatsapp" and whatsapp.state == "open" and whatsapp.opened_total == 2
    assert recipient_states(sql, c) == {"pending": 5}, "nothing was lost: the recipients wait for the provider"
    assert [line.split(":")[0] for line in opened_lines(caplog, "whatsapp")] == [
        "circuit whatsapp opened after 5 consecutive failures; calls fail fast for 1s",
        "circuit whatsapp opened again",
    ]


def transitions(name: str, state: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("appliance_breaker_transitions_total", {"breaker": name, "state": state}) or 0.0


def failing(breaker: CircuitBreaker) -> None:
    breaker.before_call()
    breaker.record_failure()


def test_two_replicas_share_one_breaker_and_its_opening_is_logged_once(redis_server, caplog):
    """Each replica has its own connection and its own breaker object; three failures on one and two on the
    other open it for both, and only the replica whose failure opened it logs the change."""
    caplog.set_level(logging.INFO, logger="appliance.breaker")
    counted = transitions("voice", "open")
    a = CircuitBreaker("voice", threshold=5, reset_after=60, client=redis_server.client())
    b = CircuitBreaker("voice", threshold=5, reset_after=60, client=redis_server.client())
    for breaker in (a, b, a, b, a):
        failing(breaker)
    assert a.state is BreakerState.OPEN and b.state is BreakerState.OPEN
    for breaker in (a, b):
        with pytest.raises(CircuitOpen, match="circuit open after 5 consecutive failures"):
            breaker.before_call()
    assert len(opened_lines(caplog, "voice")) == 1
    assert transitions("voice", "open") == counted + 1
    # A replica started later (a new process after a restart) sees the same state.
    assert CircuitBreaker("voice", client=redis_server.client()).state is BreakerState.OPEN


def test_half_open_lets_exactly_one_trial_through_across_replicas(redis_server):
    clock = SteppedClock(SYSTEM.now())
    replicas = [CircuitBreaker("embeddings", threshold=1, reset_after=60, clock=clock, client=redis_server.client())
                for _ in range(8)]
    failing(replicas[0])
    clock.advance(60)
    allowed: list[BreakerState] = []
    start = threading.Barrier(len(replicas))

    def call(breaker: CircuitBreaker) -> None:
        start.wait()
        with contextlib.suppress(CircuitOpen):
            allowed.append(breaker.before_call())

    threads = [threading.Thread(target=call, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert allowed == [BreakerState.HALF_OPEN], "one trial call in the whole cluster"
    replicas[3].record_success()
    assert all(r.state is BreakerState.CLOSED for r in replicas)
    assert ClusterState(redis_server.client(), clock).breakers.views()[0].failures == 0


def test_a_trial_whose_caller_died_frees_its_place_after_the_probe_lease(redis_server):
    clock = SteppedClock(SYSTEM.now())
    first, other = (CircuitBreaker("smtp", threshold=1, reset_after=10, probe_lease=30, clock=clock,
                                   client=redis_server.client()) for _ in range(2))
    failing(first)
    clock.advance(10)
    assert first.before_call() is BreakerState.HALF_OPEN  # and its caller never reports back
    clock.advance(29.999)
    with pytest.raises(CircuitOpen):
        other.before_call()
    clock.advance(0.001)
    assert other.before_call() is BreakerState.HALF_OPEN


def test_without_redis_the_process_keeps_its_own_count(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="appliance.breaker")
    breaker = CircuitBreaker("whatsapp", threshold=2, reset_after=60, client=redis_server.client())
    redis_server.kill()
    failing(breaker)
    failing(breaker)
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1
