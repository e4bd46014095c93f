"""A circuit breaker for calls to outside providers (seed 003): after ``threshold`` consecutive failures it
opens and fails fast for ``reset_after`` seconds, then lets one trial call through (half-open); a success
closes it, a failure opens it again.

Given a Redis client, its state lives in Redis (``appliance:breaker:<name>``), so it holds across runs, worker
restarts and replicas: a provider that failed in one run is not hammered again by the next, and when it is
half-open exactly one caller in the whole cluster gets the trial call. Every step is one Lua script, so two
replicas never both see the same change of state. Without a client (the CLI's one-shot commands, unit tests),
or while Redis is unreachable, the state is this process's own.

Each change of state is logged once, when it happens: opened (a warning), opened again after a failed trial
(a warning), closed (info); with Redis, by the one process whose call changed it. Each change is also counted
(``appliance_breaker_transitions_total``). The calls refused while it is open are not logged one by one.
"""

from __future__ import annotations

import logging
import threading
from enum import StrEnum
from typing import Any

import redis

from appliance.errors import ApplianceError
from appliance.kernel.protocol import keys
from appliance.kernel.runtime import metrics
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.logs import fields

#: How long a half-open trial call may take before its place is given to another caller (its caller may
#: have died mid-call). A provider request with its own retries stays well under this.
PROBE_LEASE = 120.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(ApplianceError):
    """The provider failed repeatedly; calls are refused until the breaker's reset time has passed."""


# KEYS[1] appliance:breaker:<name>  KEYS[2] appliance:breakers
# ARGV[1] now (epoch ms)  ARGV[2] reset_after (ms)  ARGV[3] probe lease (ms)  ARGV[4] name
# Returns {state, allowed 1|0, changed 1|0, consecutive failures, ms until a call may be tried}.
_BEFORE = """
local now = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_ms', 'probe_until_ms')
local state = h[1] or 'closed'
local failures = tonumber(h[2] or '0')
if state == 'closed' then
  if not h[1] then redis.call('SADD', KEYS[2], ARGV[4]) end
  return {'closed', 1, 0, failures, 0}
end
if state == 'open' then
  local due = tonumber(h[3] or '0') + tonumber(ARGV[2])
  if now < due then return {'open', 0, 0, failures, due - now} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until_ms', now + tonumber(ARGV[3]), 'changed_ms', now)
  return {'half_open', 1, 1, failures, 0}
end
local probe_until = tonumber(h[4] or '0')
if now < probe_until then return {'half_open', 0, 0, failures, probe_until - now} end
redis.call('HSET', KEYS[1], 'probe_until_ms', now + tonumber(ARGV[3]))
return {'half_open', 1, 0, failures, 0}
"""

# KEYS[1] appliance:breaker:<name>  KEYS[2] appliance:breakers
# ARGV[1] now (epoch ms)  ARGV[2] name
# Returns {state before, consecutive failures it ended}. Writes only when there was something to reset.
_SUCCESS = """
local h = redis.call('HMGET', KEYS[1], 'state', 'failures')
local state = h[1] or 'closed'
local failures = tonumber(h[2] or '0')
if state == 'closed' and failures == 0 then return {state, 0} end
redis.call('SADD', KEYS[2], ARGV[2])
if state == 'closed' then
  redis.call('HSET', KEYS[1], 'failures', 0)
else
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'probe_until_ms', 0, 'changed_ms', ARGV[1])
end
return {state, failures}
"""

# KEYS[1] appliance:breaker:<name>  KEYS[2] appliance:breakers
# ARGV[1] now (epoch ms)  ARGV[2] threshold  ARGV[3] reset_after (ms)  ARGV[4] name
# Returns {state before, state after, consecutive failures}. A failed trial call (half-open) opens it again.
_FAILURE = """
redis.call('SADD', KEYS[2], ARGV[4])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_ms', ARGV[1], 'probe_until_ms', 0, 'changed_ms', ARGV[1],
             'threshold', ARGV[2], 'reset_ms', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'opened_total', 1)
  return {state, 'open', failures}
end
return {state, state, failures}
"""


class CircuitBreaker:
    """``client``: the Redis holding the shared state (None: this process's own). ``clock``: its wall time
    (``time()``) is compared across replicas when shared."""

    def __init__(self, name: str, threshold: int = 5, reset_after: float = 30.0,
                 clock: Clock = SYSTEM, log: logging.Logger | None = None,
                 client: redis.Redis | None = None, probe_lease: float = PROBE_LEASE):
        self.name = name
        self.threshold = threshold
        self.reset_after = reset_after
        self.clock = clock
        self.log = log or logging.getLogger("appliance.breaker")
        self.probe_lease = probe_lease
        self._client = client
        self._scripts = None
        if client is not None:
            self._scripts = (client.register_script(_BEFORE), client.register_script(_SUCCESS),
                             client.register_script(_FAILURE))
        self._keys = [keys.breaker(name), keys.BREAKERS]
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._redis_down = False

    @property
    def state(self) -> BreakerState:
        if self._client is not None:
            try:
                value, opened = self._client.hmget(keys.breaker(self.name), ["state", "opened_ms"])
                state = BreakerState(value or BreakerState.CLOSED.value)
                if state is BreakerState.OPEN and self._now_ms() >= int(opened or 0) + int(self.reset_after * 1000):
                    return BreakerState.HALF_OPEN  # the next call is the trial one
                return state
            except redis.RedisError:
                pass
        with self._lock:
            return self._state()

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock.time() - self._opened_at >= self.reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def before_call(self) -> BreakerState:
        """Raise ``CircuitOpen`` unless a call may go through now; returns ``HALF_OPEN`` when this call is
        the one trial call (callers then try once, without retries of their own)."""
        shared = self._shared(0, [self._now_ms(), int(self.reset_after * 1000), int(self.probe_lease * 1000),
                                  self.name])
        if shared is not None:
            state, allowed, changed, failures, wait_ms = shared
            if changed:
                self._changed(BreakerState.OPEN, BreakerState(state), int(failures))
            if not int(allowed):
                raise CircuitOpen(self._refusal(int(failures), int(wait_ms) / 1000))
            return BreakerState(state)
        with self._lock:
            state = self._state()
            if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._trial_running):
                left = self.reset_after - (self.clock.time() - (self._opened_at or 0.0))
                raise CircuitOpen(self._refusal(self._failures, left))
            if state is BreakerState.HALF_OPEN:
                self._trial_running = True
            return state

    def _refusal(self, failures: int, left: float) -> str:
        return f"{self.name}: circuit open after {failures} consecutive failures; next try in {max(left, 0):.0f}s"

    def record_success(self) -> None:
        shared = self._shared(1, [self._now_ms(), self.name])
        if shared is not None:
            before, failures = shared
            if before != BreakerState.CLOSED.value:
                self._changed(BreakerState(before), BreakerState.CLOSED, int(failures))
            return
        with self._lock:
            if self._opened_at is not None:
                self._changed(self._state(), BreakerState.CLOSED, self._failures)
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        shared = self._shared(2, [self._now_ms(), self.threshold, int(self.reset_after * 1000), self.name])
        if shared is not None:
            before, after, failures = shared
            if after == BreakerState.OPEN.value and before != after:
                self._changed(BreakerState(before), BreakerState.OPEN, int(failures))
            return
        with self._lock:
            before = self._state()
            self._failures += 1
            self._trial_running = False
            if self._failures >= self.threshold or self._opened_at is not None:
                self._opened_at = self.clock.time()
            if before is not BreakerState.OPEN and self._opened_at is not None:
                self._changed(before, BreakerState.OPEN, self._failures)

    def _shared(self, which: int, args: list[Any]) -> list[Any] | None:
        """The script's answer, or None without Redis: the process's own state decides meanwhile."""
        if self._scripts is None:
            return None
        try:
            result = self._scripts[which](keys=self._keys, args=args)
        except redis.RedisError as exc:
            if not self._redis_down:
                self._redis_down = True
                self.log.warning("circuit %s: Redis unavailable, this process keeps its own count meanwhile",
                                 self.name, extra=fields(breaker=self.name, error=type(exc).__name__))
            return None
        self._redis_down = False
        return result

    def _changed(self, before: BreakerState, after: BreakerState, failures: int) -> None:
        metrics.BREAKER_TRANSITIONS.labels(self.name, after.value).inc()
        if after is BreakerState.CLOSED:
            self.log.info("circuit %s closed: a call succeeded after %d consecutive failures", self.name,
                          failures, extra=fields(breaker=self.name, state=after.value))
        elif after is BreakerState.HALF_OPEN:
            self.log.info("circuit %s half-open: one trial call goes through", self.name,
                          extra=fields(breaker=self.name, state=after.value))
        else:
            again = " again: the trial call failed" if before is BreakerState.HALF_OPEN else ""
            self.log.warning("circuit %s opened%s after %d consecutive failures; calls fail fast for %gs",
                             self.name, again, failures, self.reset_after,
                             extra=fields(breaker=self.name, state=after.value))
