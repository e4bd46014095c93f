"""Alerts at seed 003's three levels, each sent once per change of state for the whole cluster.

- **critical**: a job failed ``ALERT_CRITICAL_THRESHOLD`` times in a row (info when it succeeds again);
- **warning**: a job failed ``ALERT_WARNING_THRESHOLD`` times within ``ALERT_WARNING_WINDOW`` while its streak
  stays below critical (failures that keep coming between successes); a job late past its dead-man's switch
  (the same measure as ``/health``); a provider's circuit breaker open; Redis' eviction policy able to drop
  lock keys. Each warning is followed by an info message when its condition ends;
- **info**: those recoveries.

The states live in Redis, changed by Lua scripts, so with several replicas the one whose step changed a
state sends its alert and the others stay silent. A log line is always written; Slack (``ALERT_SLACK_*``) and
a generic JSON webhook (``ALERT_WEBHOOK_URL``) are sent when configured. Delivery failures are logged and never
fail a run. Stale jobs, breakers and the eviction policy are looked at every ``ALERT_CHECK_INTERVAL`` seconds
by a thread that starts with the first run the alerter hears of (so only a worker that runs jobs watches).
"""

from __future__ import annotations

import logging
import threading
from enum import StrEnum
from typing import Any

import httpx
import redis

from appliance.config.core import AlertConfig
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.eviction import eviction_policy, eviction_problem
from appliance.kernel.protocol.locks import intermittent_condition
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.freshness import freshness
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.redaction import Redactor

log = logging.getLogger("appliance.alerts")


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


LOG_LEVEL = {Severity.CRITICAL: logging.ERROR, Severity.WARNING: logging.WARNING, Severity.INFO: logging.INFO}
SLACK_ICON = {Severity.CRITICAL: ":rotating_light: ", Severity.WARNING: ":warning: ",
              Severity.INFO: ":white_check_mark: "}

# KEYS[1] appliance:alerts   ARGV[1] job
# Returns the new number of consecutive failures.
_FAILED = "return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)"

# KEYS[1] appliance:failures:<job>   ARGV[1] now (epoch s)  ARGV[2] window (s)  ARGV[3] how many to keep
# ARGV[4] 1 to record a failure now, 0 to only count. Returns the failures within the window. Only the newest
# ARGV[3] (the warning threshold) are kept: enough to tell whether that many fell within the window.
_RECENT = """
if ARGV[4] == '1' then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
  redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) * 1000))
end
local count = 0
for _, at in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if tonumber(at) >= tonumber(ARGV[1]) - tonumber(ARGV[2]) then count = count + 1 end
end
return count
"""

# KEYS[1] appliance:alert-states   ARGV[1] condition ("stale:JOB", "breaker:NAME", ...)  ARGV[2] warning|ok
# Returns 1 when this call changed the condition's state (the caller sends the alert), else 0. A condition
# never seen is ok.
_TRANSITION = """
local before = redis.call('HGET', KEYS[1], ARGV[1]) or 'ok'
if before == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class Alerter:
    """``redactor`` (``Redactor.from_config(config)``) masks the alert's text before it leaves the process: a
    failing run's error may quote a secret, and a webhook is outside the log's redaction. Without one, URL
    passwords are still masked."""

    def __init__(self, client: redis.Redis, config: AlertConfig, timeout: float = 5.0,
                 redactor: Redactor | None = None, clock: Clock = SYSTEM):
        self.config = config
        self.client = client
        self._failed = client.register_script(_FAILED)
        self._recent = client.register_script(_RECENT)
        self._transition = client.register_script(_TRANSITION)
        self.timeout = timeout
        self.redactor = redactor or Redactor()
        self.clock = clock
        self._watching = threading.Lock()
        self._watch: threading.Thread | None = None
        self._stop = threading.Event()

    # -- what the runner reports ----------------------------------------------------------------------
    def failed(self, job: str, error: str) -> None:
        if not self.config.enabled:
            return
        self._start_watch()
        try:
            streak = int(self._failed(keys=[keys.ALERTS], args=[job]))
            recent = self._count(job, record=True)
        except redis.RedisError:
            return
        if streak == self.config.critical_threshold:
            self._send(Severity.CRITICAL, "critical", job, f"job {job} failed {streak} times in a row: {error}",
                       consecutive_failures=streak)
        elif streak < self.config.critical_threshold and recent >= self.config.warning_threshold:
            self.condition(intermittent_condition(job), True, job,
                           f"job {job} failed {recent} times within {self.config.warning_window:g}s "
                           f"(latest: {error})", "")

    def succeeded(self, job: str, streak: int, warned: bool = True) -> None:
        """``streak``: the consecutive failures this success ended, and ``warned``: whether the job's "failing
        often" warning is on (both read by the run's finish script, so a success costs no round trip here
        unless that warning may have to end)."""
        if not self.config.enabled:
            return
        self._start_watch()
        if streak >= self.config.critical_threshold:
            self._send(Severity.INFO, "recovered", job, f"job {job} succeeded again after {streak} consecutive "
                       f"failures", consecutive_failures=streak)
        if not warned:
            return
        try:
            recent = self._count(job, record=False)
        except redis.RedisError:
            return
        if recent < self.config.warning_threshold:
            self.condition(intermittent_condition(job), False, job, "",
                           f"job {job} no longer fails often ({recent} failures within "
                           f"{self.config.warning_window:g}s)")

    def _count(self, job: str, record: bool) -> int:
        args = [self.clock.time(), self.config.warning_window, self.config.warning_threshold, 1 if record else 0]
        return int(self._recent(keys=[keys.failures(job)], args=args))

    # -- conditions watched ---------------------------------------------------------------------------
    def condition(self, name: str, active: bool, subject: str, warning: str, resolved: str) -> bool:
        """Move condition ``name`` to warning (``active``) or ok; the step that changes it sends ``warning``
        or the ``resolved`` info. Returns whether this call changed it."""
        state = Severity.WARNING.value if active else "ok"
        if not int(self._transition(keys=[keys.ALERT_STATES], args=[name, state])):
            return False
        if active:
            self._send(Severity.WARNING, "warning", subject, warning, condition=name)
        else:
            self._send(Severity.INFO, "resolved", subject, resolved, condition=name)
        return True

    def check(self) -> None:
        """Look once at what may need a warning: stale jobs, breakers, the eviction policy."""
        if not self.config.enabled:
            return
        state = ClusterState(self.client)
        now = self.clock.time()
        if state.pauses.paused_all() is None:
            jobs, workers = state.jobs.views(), state.workers.live()
            for job, entry in freshness(jobs, workers, now, self.config.stale_factor).items():
                if entry.status in ("stale", "fresh"):
                    self.condition(f"stale:{job}", entry.status == "stale", job,
                                   f"job {job} is late: no success since {entry.last_success or 'it started'} "
                                   f"(allowed {entry.allowed_seconds:g}s, HEALTH_STALE_FACTOR x its period)",
                                   f"job {job} succeeded again on time")
        for breaker in state.breakers.views(now):
            self.condition(f"breaker:{breaker.name}", breaker.state != "closed", breaker.name,
                           f"circuit breaker {breaker.name} is {breaker.state} after {breaker.failures} "
                           f"consecutive failures: calls to it fail fast",
                           f"circuit breaker {breaker.name} closed: calls go through again")
        problem = eviction_problem(eviction_policy(self.client))
        self.condition("eviction", problem is not None, "redis", f"UNSAFE REDIS: {problem}",
                       "Redis' eviction policy is noeviction again: lock keys are safe")

    def _start_watch(self) -> None:
        if self._watch is not None or self.config.check_interval <= 0:
            return
        with self._watching:
            if self._watch is None:
                self._watch = threading.Thread(target=self._watch_loop, name="alert-watch", daemon=True)
                self._watch.start()

    def _watch_loop(self) -> None:
        while not self.clock.wait(self._stop, self.config.check_interval):
            try:
                self.check()
            except redis.RedisError as exc:
                log.debug("alert check skipped: Redis unavailable", extra=fields(error=type(exc).__name__))

    def close(self) -> None:
        """Stop the watch thread (it is a daemon: a process may also just exit)."""
        self._stop.set()

    # -- delivery -------------------------------------------------------------------------------------
    def _send(self, severity: Severity, state: str, subject: str, text: str, **extra: Any) -> None:
        text = self.redactor.text(text)
        log.log(LOG_LEVEL[severity], "ALERT %s: %s", state, text,
                extra=fields(alert=state, severity=severity.value, subject=subject, **extra))
        payload = {"severity": severity.value, "state": state, "subject": subject, "message": text,
                   "at": iso(self.clock.now()), **extra}
        if "consecutive_failures" in extra:
            payload["job"] = subject
        targets: list[tuple[str, dict[str, Any]]] = []
        if self.config.slack_enabled and self.config.slack_webhook_url:
            slack: dict[str, Any] = {"text": SLACK_ICON[severity] + text}
            if self.config.slack_channel:
                slack["channel"] = self.config.slack_channel
            targets.append((self.config.slack_webhook_url, slack))
        if self.config.webhook_url:
            targets.append((self.config.webhook_url, payload))
        if targets:
            threading.Thread(target=self._post_all, args=(targets,), name="alert", daemon=True).start()

    def _post_all(self, targets: list[tuple[str, dict[str, Any]]]) -> None:
        for url, body in targets:
            try:
                httpx.post(url, json=body, timeout=self.timeout).raise_for_status()
            except httpx.HTTPError as exc:
                log.warning("alert delivery failed: %s", type(exc).__name__)
