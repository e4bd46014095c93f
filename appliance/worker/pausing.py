"""The pauses as this worker last read them (each refresh, and at once on a control message): what a paused slot's
ledger row says (who, why, until when), pauses that end by themselves at their ``until``, and the warning for a
pause without an end that outlives ``PAUSE_ALERT_AFTER``.

A pause's end is due on every replica at once; each tries to end it with a compare-and-delete, so one does, and
that one applies the on-resume policy and writes the audit row (``Actions.end_at_until``). The loop sleeps no
longer than until the next end, so a pause ends within its refresh-free wake-up (well under a second).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

import psycopg
import redis

from appliance.config import Config
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.actions import Actions
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.pauses import Pause
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.logs import fields
from appliance.worker.pool import RunPool
from appliance.worker.runner import Runner


class Worker(Protocol):
    """What the watch needs of ``appliance.worker.loop.Worker`` (named here, not imported: no cycle)."""

    config: Config
    redis: redis.Redis
    runner: Runner
    pool: RunPool
    clock: Clock

    def wake(self, refresh: bool = False) -> None: ...

log = logging.getLogger("appliance.worker")

ALERT_PREFIX = "pause:"


class PauseWatch:
    def __init__(self, worker: Worker):
        self.worker = worker
        self.each: dict[str, Pause] = {}
        self.all: Pause | None = None
        self._ending: set[tuple[str | None, str]] = set()
        self._lock = threading.Lock()

    def update(self, each: dict[str, str], every: str | None) -> None:
        """The pauses as read from Redis (``appliance:paused``, ``appliance:paused-all``)."""
        parsed = {job: Pause.from_json(json.loads(raw)) for job, raw in each.items()}
        self.each, self.all = parsed, Pause.from_json(json.loads(every)) if every else None

    def reason(self, job: str) -> str:
        """What a slot of ``job`` held back by its pause (or the pause-all) is recorded with."""
        pause = self.all or self.each.get(job)
        return pause.describe() if pause else "the job is paused"

    def _timed(self) -> Iterator[tuple[str | None, Pause, datetime]]:
        for job, pause in [(None, self.all), *self.each.items()]:
            if pause is not None and pause.ends is not None:
                yield job, pause, pause.ends

    def seconds_to_next_end(self, now: datetime) -> float | None:
        """Until the next pause's end not handed over yet (one being ended, or ended elsewhere and not refreshed
        yet, must not keep the loop from sleeping)."""
        with self._lock:
            ends = [(when - now).total_seconds() for job, pause, when in self._timed()
                    if (job, pause.at) not in self._ending]
        return min(ends) if ends else None

    def end_due(self) -> None:
        """Hand each pause whose end came to a pool thread (once each) to be ended."""
        now = self.worker.clock.now()
        for job, pause, when in list(self._timed()):
            key = (job, pause.at)
            if when > now:
                continue
            with self._lock:
                if key in self._ending:
                    continue
                self._ending.add(key)
            self.worker.pool.submit(functools.partial(self._end, job, pause, key))

    def _end(self, job: str | None, pause: Pause, key: tuple[str | None, str]) -> None:
        try:
            actions = self.actions()
            if actions.end_at_until(f"worker:{self.worker.runner.worker_id}", job, pause):
                log.info("pause ended at its end", extra=fields(job=job or "*", paused_by=pause.by, until=pause.until))
                for warning in actions.warnings:
                    log.warning(warning)
        except Exception as exc:  # noqa: BLE001 - Redis down: tried again at the next pass
            log.warning("could not end a pause at its end", extra=fields(job=job or "*", error=str(exc)))
            with self._lock:
                self._ending.discard(key)
            return
        self.worker.wake(refresh=True)

    def actions(self) -> Actions:
        runner = self.worker.runner
        ledger = runner.ledger

        @contextlib.contextmanager
        def connect() -> Iterator[psycopg.Connection]:
            if ledger is None:
                raise psycopg.OperationalError("no PostgreSQL configured")
            with ledger.pool.connection(timeout=2.0) as conn:
                yield conn

        return Actions(ClusterState(self.worker.redis, self.worker.clock), connect, runner.redact,
                       self.worker.config.core.clock_skew_warn)

    def check_alerts(self) -> None:
        """Warn (once, cluster-wide) about each pause without an end older than ``PAUSE_ALERT_AFTER``, and say when
        it is over. On a pool thread."""
        alerts = self.worker.config.core.alerts
        if not alerts.enabled:
            return
        alerter = self.worker.runner.alerter
        now = self.worker.clock.now()
        open_ended = {}
        for job, pause in [("*", self.all), *self.each.items()]:
            if pause is None or pause.until is not None:
                continue
            age = (now - datetime.fromisoformat(pause.at.replace("Z", "+00:00"))).total_seconds()
            if age > alerts.pause_alert_after:
                open_ended[ALERT_PREFIX + job] = (job, pause, age)
        try:
            for name, (job, pause, age) in open_ended.items():
                what = "every job" if job == "*" else f"job {job}"
                alerter.condition(name, True, job, f"{what} has been paused for {age / 3600:.1f} h with no end "
                                  f"(by {pause.by}: {pause.reason or 'no reason given'}); resume it or give it an "
                                  "end (--until)", "")
            states = self.worker.redis.hgetall(keys.ALERT_STATES)
            for name, state in states.items():
                if name.startswith(ALERT_PREFIX) and state == "warning" and name not in open_ended:
                    job = name.removeprefix(ALERT_PREFIX)
                    alerter.condition(name, False, job, "", f"{'every job' if job == '*' else f'job {job}'} is "
                                      "no longer paused without an end")
        except Exception as exc:  # noqa: BLE001 - Redis down: looked at again at the next refresh
            log.debug("pause alerts not checked", extra=fields(error=type(exc).__name__))
