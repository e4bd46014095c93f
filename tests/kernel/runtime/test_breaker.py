"""The circuit breaker's states as a pure function of failures, successes and an injected clock, and the
one log line per change of state."""

from __future__ import annotations

import logging

import pytest

from appliance.kernel.runtime.breaker import BreakerState, CircuitBreaker, CircuitOpen
from appliance.kernel.runtime.clock import SteppedClock


def transitions(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.fields["state"]) for r in caplog.records if r.name == "test.breaker"]


def test_each_change_of_state_is_logged_once(caplog):
    clock = SteppedClock()
    breaker = CircuitBreaker("embeddings", threshold=3, reset_after=60, clock=clock,
                             log=logging.getLogger("test.breaker"))
    caplog.set_level(logging.INFO, logger="test.breaker")
    for _ in range(5):  # two more failures of calls already in flight once it is open
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    for _ in range(3):
        with pytest.raises(CircuitOpen):
            breaker.before_call()
    assert transitions(caplog) == [("WARNING", "open")]
    assert "opened after 3 consecutive failures; calls fail fast for 60s" in caplog.records[0].getMessage()

    clock.advance(60)
    breaker.before_call()  # the trial call
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert transitions(caplog) == [("WARNING", "open"), ("WARNING", "open")]
    assert "opened again: the trial call failed" in caplog.records[-1].getMessage()

    clock.advance(60)
    breaker.before_call()
    breaker.record_success()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert transitions(caplog) == [("WARNING", "open"), ("WARNING", "open"), ("INFO", "closed")]


def test_failures_below_the_threshold_and_successes_log_nothing(caplog):
    breaker = CircuitBreaker("smtp", threshold=3, clock=SteppedClock(), log=logging.getLogger("test.breaker"))
    caplog.set_level(logging.INFO, logger="test.breaker")
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and transitions(caplog) == []
