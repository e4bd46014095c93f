"""A circuit breaker for calls to outside providers (seed 003): after ``threshold`` consecutive failures it
opens and fails fast for ``reset_after`` seconds, then lets one trial call through (half-open); a success
closes it, a failure opens it again.

Each change of state is logged once, when it happens: opened (a warning), opened again after a failed trial
(a warning), closed (info). The calls refused while it is open are not logged one by one.
"""

from __future__ import annotations

import logging
import threading
import time
from enum import Enum
from typing import Callable, TypeVar

from appliance.errors import ApplianceError
from appliance.logs import fields

T = TypeVar("T")


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(ApplianceError):
    """The provider failed repeatedly; calls are refused until the breaker's reset time has passed."""


class CircuitBreaker:
    def __init__(self, name: str, threshold: int = 5, reset_after: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, log: logging.Logger | None = None):
        self.name = name
        self.threshold = threshold
        self.reset_after = reset_after
        self.clock = clock
        self.log = log or logging.getLogger("appliance.breaker")
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def before_call(self) -> None:
        """Raise ``CircuitOpen`` unless a call may go through now."""
        with self._lock:
            state = self._state()
            if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._trial_running):
                left = self.reset_after - (self.clock() - (self._opened_at or 0.0))
                raise CircuitOpen(f"{self.name}: circuit open after {self._failures} consecutive failures; "
                                  f"next try in {max(left, 0):.0f}s")
            if state is BreakerState.HALF_OPEN:
                self._trial_running = True

    def record_success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                self.log.info("circuit %s closed: a call succeeded after %d consecutive failures", self.name,
                              self._failures, extra=fields(breaker=self.name, state=BreakerState.CLOSED.value))
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            before = self._state()
            self._failures += 1
            self._trial_running = False
            if self._failures >= self.threshold or self._opened_at is not None:
                self._opened_at = self.clock()
            if before is not BreakerState.OPEN and self._opened_at is not None:
                again = " again: the trial call failed" if before is BreakerState.HALF_OPEN else ""
                self.log.warning("circuit %s opened%s after %d consecutive failures; calls fail fast for %gs",
                                 self.name, again, self._failures, self.reset_after,
                                 extra=fields(breaker=self.name, state=BreakerState.OPEN.value))

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn`` through the breaker: failures (any exception) count towards opening it."""
        self.before_call()
        try:
            result = fn(*args, **kwargs)
        except Exception:
            self.record_failure()
            raise
        self.record_success()
        return result
