"""The scheduler loop: a ``schedule.Scheduler`` whose jobs take their slot times from ``appliance.schedules``.

The loop sleeps until the earliest of: the next slot, the next timer (retries, takeover checks) or the next
refresh, and wakes at once for control messages (trigger, pause, resume) and shutdown. It never runs a job
itself: each slot is handed to the run pool, so a slow job never delays another job's slot.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import redis
import schedule

from appliance import keys
from appliance.config import Config, JobSettings
from appliance.locks import Claim
from appliance.logs import fields
from appliance.state import ClusterState
from appliance.worker.pool import RunPool
from appliance.worker.runner import Attempt, Runner, epoch_ms

log = logging.getLogger("appliance.worker")
logging.getLogger("schedule").setLevel(logging.WARNING)

Clock = Callable[[], datetime]
REFRESH_EVERY = 10.0  # pause flags and pending triggers, in case a pub/sub message was missed


def utc_clock() -> datetime:
    return datetime.now(timezone.utc)


class SlotJob(schedule.Job):
    """A ``schedule.Job`` whose next run is the next wall-clock slot of its ``Schedule``, in aware UTC.

    ``slot`` is the pending slot; ``next_run`` mirrors it (naive UTC) for the library's ordering.
    """

    def __init__(self, settings: JobSettings, scheduler: schedule.Scheduler, clock: Clock, first: datetime,
                 on_missed: Callable[[JobSettings, int], None]):
        super().__init__(interval=1, scheduler=scheduler)
        self.unit = "seconds"
        self.settings = settings
        self.clock = clock
        self.slot = first
        self.on_missed = on_missed
        self._started = False

    @property
    def should_run(self) -> bool:
        return self.clock() >= self.slot

    def _schedule_next_run(self) -> None:
        if self._started:
            self.slot = self._following(self.slot)
        self._started = True
        self.next_run = self.slot.replace(tzinfo=None)

    def _following(self, previous: datetime) -> datetime:
        """The slot after ``previous``; when the loop fell behind, the newest slot still within grace runs
        once and the others are counted as missed."""
        sched = self.settings.schedule
        nxt = sched.next_after(previous)
        now = self.clock()
        if nxt > now:
            return nxt
        latest = sched.last_at_or_before(now) or nxt
        missed = 0
        probe = nxt
        while probe < latest and missed < 10_000:
            missed += 1
            probe = sched.next_after(probe)
        if (now - latest).total_seconds() <= self.settings.grace:
            chosen = latest
        else:
            missed += 1
            chosen = sched.next_after(now)
        if missed:
            self.on_missed(self.settings, missed)
        return chosen


class Worker:
    def __init__(self, config: Config, client: redis.Redis, runner: Runner, pool: RunPool,
                 jobs: tuple[JobSettings, ...], clock: Clock = utc_clock):
        self.config = config
        self.redis = client
        self.runner = runner
        self.pool = pool
        self.jobs = {job.name: job for job in jobs}
        self.clock = clock
        self.state = ClusterState(client)
        self.scheduler = schedule.Scheduler()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._refresh_due = 0.0
        self._paused: set[str] = set()
        self._running: set[str] = set()
        self._deferred: set[str] = set()
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._redis_down_logged = False

    # -- control --------------------------------------------------------------------------------------
    def wake(self, refresh: bool = False) -> None:
        if refresh:
            self._refresh_due = 0.0
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def running_jobs(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def after(self, delay: float, action: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), action))
        self._wake.set()

    # -- setup ----------------------------------------------------------------------------------------
    def plan(self) -> None:
        """Create one ``SlotJob`` per job; a slot missed while no worker ran goes first if within grace."""
        now = self.clock()
        done = self._done_markers()
        for job in self.jobs.values():
            first = job.schedule.next_after(now)
            latest = job.schedule.last_at_or_before(now)
            marker = done.get(job.name)
            if latest is not None and marker is not None and epoch_ms(latest) > marker:
                if (now - latest).total_seconds() <= job.grace:
                    first = latest
                    log.info("running a missed slot", extra=fields(job=job.name, slot=latest.isoformat()))
                else:
                    self._missed(job, 1)
            slot_job = SlotJob(job, self.scheduler, self.clock, first, self._missed)
            slot_job.do(self._slot_due, slot_job)

    def _done_markers(self) -> dict[str, int]:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in self.jobs:
                pipe.hget(keys.slot(name), "done")
            values = pipe.execute()
        except redis.RedisError:
            return {}
        return {name: int(v) for name, v in zip(self.jobs, values) if v is not None}

    def _missed(self, job: JobSettings, count: int) -> None:
        log.warning("slots missed", extra=fields(job=job.name, missed=count))
        for _ in range(min(count, 1000)):
            self.runner.skip(job.name, "missed")

    # -- the loop -------------------------------------------------------------------------------------
    def run_forever(self) -> None:
        while not self.stopping:
            self.scheduler.run_pending()
            self._run_timers()
            if time.monotonic() >= self._refresh_due:
                self._refresh()
            self._wake.wait(self._sleep_seconds())
            self._wake.clear()

    def _sleep_seconds(self) -> float:
        waits = [self._refresh_due - time.monotonic()]
        now = self.clock()
        waits += [(job.slot - now).total_seconds() for job in self.scheduler.jobs]
        with self._lock:
            if self._timers:
                waits.append(self._timers[0][0] - time.monotonic())
        return max(0.0, min(waits))

    def _run_timers(self) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > time.monotonic():
                    return
                _, _, action = heapq.heappop(self._timers)
            action()

    def _refresh(self) -> None:
        """Pause flags and pending triggers, in one round trip."""
        self._refresh_due = time.monotonic() + REFRESH_EVERY
        names = list(self.jobs)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hkeys(keys.PAUSED)
            for name in names:
                pipe.llen(keys.triggers(name))
            paused, *pending = pipe.execute()
        except redis.RedisError as exc:
            self._redis_down(exc)
            self._refresh_due = time.monotonic() + 1.0
            return
        self._paused = set(paused)
        for name, count in zip(names, pending):
            if count:
                self._dispatch(self.jobs[name], self.clock(), trigger={"take": True})

    def _redis_down(self, exc: Exception) -> None:
        if not self._redis_down_logged:
            log.error("Redis unavailable: slots are skipped until it returns", extra=fields(error=str(exc)))
            self._redis_down_logged = True

    # -- dispatch -------------------------------------------------------------------------------------
    def _slot_due(self, job: SlotJob) -> None:
        """Called by ``schedule`` for a due ``SlotJob``; must not raise, or the library would not reschedule."""
        try:
            self._dispatch(job.settings, job.slot)
        except Exception:  # noqa: BLE001 - keep the loop alive whatever happens in one dispatch
            log.exception("dispatch failed", extra=fields(job=job.settings.name))

    def _dispatch(self, job: JobSettings, slot: datetime, attempt: int = 1, trigger: dict | None = None) -> None:
        if self.stopping:
            return
        if trigger is None and attempt == 1 and job.name in self._paused:
            self.runner.skip(job.name, "paused")
            return
        with self._lock:
            busy = job.name in self._running
            if not busy:
                self._running.add(job.name)
        if busy:
            if trigger is None and attempt == 1:
                self.runner.skip(job.name, "skipped_overlap")
            elif trigger is not None and trigger.get("take"):
                with self._lock:
                    self._deferred.add(job.name)
            return
        self.pool.submit(lambda: self._run_task(job, slot, attempt, trigger))

    def _run_task(self, job: JobSettings, slot: datetime, attempt: int, trigger: dict | None) -> None:
        try:
            result = self.runner.execute(job, slot, attempt, trigger)
        finally:
            with self._lock:
                self._running.discard(job.name)
                deferred = job.name in self._deferred
                self._deferred.discard(job.name)
        self._after_attempt(job, slot, attempt, trigger, result)
        self.wake(refresh=bool(trigger) or deferred)

    def _after_attempt(self, job: JobSettings, slot: datetime, attempt: int, trigger: dict | None,
                       result: Attempt) -> None:
        if result.outcome == "skipped_unavailable":
            self._redis_down(Exception(result.error))
            return
        if result.claim is not None and self._redis_down_logged:
            log.info("Redis is back")
            self._redis_down_logged = False
        if result.retry:
            delay = self.config.core.retry_backoff * (5 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            log.info("retry scheduled", extra=fields(job=job.name, attempt=attempt + 1, delay_s=round(delay, 3)))
            retry_trigger = result.trigger and {k: v for k, v in result.trigger.items() if k != "take"}
            self.after(delay, lambda: self._dispatch(job, slot, attempt + 1, retry_trigger or None))
        elif result.claim in (Claim.RUNNING, Claim.LOCKED):
            if trigger is None:
                self._watch_holder(job, slot, result.holder_pttl)
            elif trigger.get("take"):
                # The lease is busy elsewhere: serve the pending trigger as soon as it is free.
                self.after(max(result.holder_pttl, 0) / 1000 + 0.05,
                           lambda: self._dispatch(job, self.clock(), trigger={"take": True}))

    # -- takeover of a slot whose holder died ---------------------------------------------------------
    def _watch_holder(self, job: JobSettings, slot: datetime, pttl: int) -> None:
        """The slot is held by another run. If that run's holder dies (its lease expires without a finish),
        take the slot over, as long as it is within lock TTL + grace of the slot."""
        try:
            seen = self.redis.hget(keys.RUNNING, job.name)
        except redis.RedisError:
            return
        deadline = slot + timedelta(seconds=job.lock_ttl + job.grace)
        self.after(max(pttl, 0) / 1000 + 0.05, lambda: self._check_holder(job, slot, seen, deadline))

    def _check_holder(self, job: JobSettings, slot: datetime, seen: str | None, deadline: datetime) -> None:
        if self.stopping or self.clock() > deadline or seen is None:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(keys.RUNNING, job.name)
            pipe.pttl(keys.lock(job.name))
            current, pttl = pipe.execute()
        except redis.RedisError:
            return
        if current != seen:
            return  # the holder finished (or a newer run started): nothing to take over
        if pttl > 0:
            self.after(pttl / 1000 + 0.05, lambda: self._check_holder(job, slot, seen, deadline))
            return
        log.warning("holder of a slot died; taking the slot over", extra=fields(job=job.name, slot=slot.isoformat()))
        self._dispatch(job, slot)
