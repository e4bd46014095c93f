"""The scheduler loop: a ``schedule.Scheduler`` whose jobs take their slot times from
``appliance.kernel.schedule.model``.

The loop sleeps until the earliest of: the next slot, the next timer (retries, takeover checks, catch-up)
or the next refresh, and wakes at once for control messages (trigger, pause, resume) and shutdown. It never
runs a job itself: each slot is handed to the run pool, so a slow job never delays another job's slot.

Misfire policy, the same after worker downtime, a Redis or PostgreSQL outage and a dead holder: the latest
slot still within its grace runs once; older slots are recorded (``missed``, ``skipped_unavailable``,
``abandoned``) and not run.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import cast

import redis
import schedule

from appliance.config import Config
from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.logs import fields
from appliance.worker.backfills import BackfillPump
from appliance.worker.catch_up import coalesced_into, expected_duration, is_late
from appliance.worker.claim import OpenRun
from appliance.worker.dispatch import Attempt, Dispatch, Source
from appliance.worker.herd import joins_herd, take_herd
from appliance.worker.misfire import Misfire
from appliance.worker.overlap import REMOTE_POLL, Buffers, Verdict, decide
from appliance.worker.pausing import PauseWatch
from appliance.worker.pool import RunPool
from appliance.worker.recovery import Recovery
from appliance.worker.runner import Runner
from appliance.worker.shares import REST_BEFORE, Shares
from appliance.worker.slotjob import Lead, SlotJob

log = logging.getLogger("appliance.worker")
logging.getLogger("schedule").setLevel(logging.WARNING)

REFRESH_EVERY = 10.0  # pause flags and pending triggers, in case a pub/sub message was missed


class Worker(Misfire, Recovery):
    def __init__(self, config: Config, client: redis.Redis, runner: Runner, pool: RunPool,
                 jobs: tuple[JobSettings, ...], clock: Clock = SYSTEM):
        self.config = config
        self.redis = client
        self.runner = runner
        self.pool = pool
        self.jobs = {job.name: job for job in jobs}
        self.clock = clock
        self.scheduler = schedule.Scheduler()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._refresh_due = 0.0
        self._paused: set[str] = set()
        self._running: dict[str, list[Dispatch]] = {}  # job -> the dispatches of its runs on this worker
        self._buffers = Buffers()  # slots waiting for the run before them (overlap policy, catch-ups)
        self._deferred: set[str] = set()
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._redis_down_logged = False
        self._watching: set[str] = set()  # jobs whose lease holder is being watched for a takeover
        self._unavailable: dict[str, Dispatch] = {}  # job -> latest slot (or retry) an outage kept from running
        self._catch_up_armed = False
        self._herd: list[Dispatch] | None = None  # while the loop collects the slots due in one pass
        self._herd_thread = 0
        self.lead = Lead()  # how long before their instant slots are claimed
        self.shares = Shares(runner.state, runner.worker_id, clock)  # a herd shared among the live workers
        self.pauses = PauseWatch(self)  # reasons, ends at ``until``, the alert on pauses without one
        self.backfills = BackfillPump(self)  # slots of the past run on purpose (``appliance backfill``)

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

    @property
    def paused_jobs(self) -> set[str]:
        return self._paused

    def running_jobs(self) -> list[str]:
        with self._lock:
            return sorted(name for name, runs in self._running.items() if runs)

    def after(self, delay: float, action: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._timers, (self.clock.monotonic() + delay, next(self._seq), action))
        self._wake.set()

    # -- setup ----------------------------------------------------------------------------------------
    def plan(self) -> None:
        """Create one ``SlotJob`` per job, starting with a slot missed while no worker ran when it is within
        grace; older missed slots are recorded. Jobs whose lease a run still holds are watched for takeover."""
        now = self.clock.now()
        last, open_slots = self._ledger_state()
        for job in self.jobs.values():
            first = job.schedule.next_after(now)
            latest = job.schedule.last_at_or_before(now)
            if latest is not None and job.name in last:
                first = self._misfire(job, now, latest, last[job.name], open_slots.get(job.name, set())) or first
            slot_job = SlotJob(job, self.scheduler, self.clock, first, self._missed, self.lead)
            slot_job.do(self._slot_due, slot_job)
            if job.name in open_slots:
                self._watch_holder(job, 0)
                if job.policy.per_slot:  # each open slot under its own lease
                    for slot in open_slots[job.name]:
                        self._watch_holder(job, 0, slot)

    # -- the loop -------------------------------------------------------------------------------------
    def run_forever(self) -> None:
        while not self.stopping:
            if self.clock.monotonic() >= self._refresh_due:
                self._refresh()  # first, so pause flags hold from the very first slot
            # The slots this pass finds due (or that waited for their instant) go together; only this thread's.
            self._herd, self._herd_thread = [], threading.get_ident()
            self.scheduler.run_pending()
            self.pauses.end_due()
            self._run_timers()
            self._start_herd()
            self.clock.wait(self._wake, self._sleep_seconds())
            self._wake.clear()

    def _start_herd(self) -> None:
        """The slots of this pass: one alone claims as it always did; more are claimed together."""
        herd, self._herd = self._herd or [], None
        if len(herd) == 1:
            self.pool.submit(lambda: self._run_task(herd[0]))
        elif herd:
            self.pool.submit(lambda: self._run_herd(herd))

    def _sleep_seconds(self) -> float:
        waits = [self._refresh_due - self.clock.monotonic()]
        now = self.clock.now()
        waits += [(cast(SlotJob, job).start - now).total_seconds() - self.lead.seconds for job in self.scheduler.jobs]
        with self._lock:
            if self._timers:
                waits.append(self._timers[0][0] - self.clock.monotonic())
        pause_ends = self.pauses.seconds_to_next_end(now)
        if pause_ends is not None:
            waits.append(pause_ends)
        return max(0.0, min(waits))

    def _run_timers(self) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > self.clock.monotonic():
                    return
                _, _, action = heapq.heappop(self._timers)
            action()

    def _refresh(self) -> None:
        """Pause flags and pending triggers, in one round trip."""
        self._refresh_due = self.clock.monotonic() + REFRESH_EVERY
        names = list(self.jobs)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(keys.PAUSED)
            pipe.get(keys.PAUSED_ALL)
            pipe.hgetall(keys.CANCEL)
            for name in names:
                pipe.llen(keys.triggers(name))
            paused, paused_all, cancels, *pending = pipe.execute()
        except redis.RedisError as exc:
            self._redis_down(exc)
            self._refresh_due = self.clock.monotonic() + 1.0
            return
        self._paused = set(self.jobs) if paused_all else set(paused)
        for run_id in cancels.values():
            self.runner.cancel_by_newer(run_id)
        self.pauses.update(paused, paused_all)
        self.pool.submit(self.pauses.check_alerts)
        self.backfills.poll_soon()
        for name, count in zip(names, pending, strict=True):
            if count:
                self._dispatch(Dispatch(self.jobs[name], self.clock.now(), Source.QUEUED))

    def _redis_down(self, exc: Exception) -> None:
        if not self._redis_down_logged:
            log.error("Redis unavailable: slots are skipped until it returns", extra=fields(error=str(exc)))
            self._redis_down_logged = True

    # -- dispatch -------------------------------------------------------------------------------------
    def _slot_due(self, job: SlotJob) -> None:
        """Called by ``schedule`` for a due ``SlotJob``; must not raise, or the library would not reschedule."""
        try:
            self._dispatch(Dispatch(job.settings, job.slot, catch_up=is_late(job.start, self.clock.now())))
        except Exception:
            log.exception("dispatch failed", extra=fields(job=job.settings.name))

    def _dispatch(self, d: Dispatch) -> None:
        if self.stopping:
            return
        job, claims = d.job, self.runner.claims
        first_slot = d.scheduled and d.attempt == 1
        if first_slot and self._excluded(d):
            return
        if first_slot and job.name in self._paused:
            claims.skip(job.name, Outcome.PAUSED)
            claims.record_slot(job.name, d.slot, Outcome.PAUSED, self.pauses.reason(job.name))
            return
        if self._coalesce(d):
            return
        capacity = job.policy.max_concurrent if d.scheduled else 1
        with self._lock:
            runs = self._running.setdefault(job.name, [])
            holder = runs[-1] if len(runs) >= capacity or (runs and not d.scheduled) else None
            if holder is None:
                runs.append(d)
        if holder is not None and first_slot and (ahead := (d.start - self.clock.now()).total_seconds()) > 0:
            # Claimed ahead of its instant while this worker's previous run still goes: look again on the
            # instant itself, when the slot would have been taken without the lead.
            self.after(ahead, lambda: self._dispatch(d))
            return
        if holder is not None:
            self._busy(d, holder)
            return
        if self._herd is not None and self._herd_thread == threading.get_ident() and joins_herd(d):
            self._herd.append(d)
            return
        self.pool.submit(lambda: self._run_task(d))

    def _excluded(self, d: Dispatch) -> bool:
        """A slot a calendar of its job excludes is recorded ``skipped_calendar``, naming the calendar."""
        excluded = d.job.policy.excluded(d.slot, d.job.schedule.tz)
        if excluded is None:
            return False
        calendar, reason = excluded
        self.runner.claims.skip(d.job.name, Outcome.SKIPPED_CALENDAR)
        self.runner.claims.record_slot(d.job.name, d.slot, Outcome.SKIPPED_CALENDAR, f"calendar {calendar}: {reason}")
        return True

    def _coalesce(self, d: Dispatch) -> bool:
        """Record a catch-up that would run into the job's next slot as coalesced into it (``catch_up``)."""
        if not d.catch_up:
            return False
        expected = expected_duration(self.runner.durations, self.redis, d.job.name)
        following = coalesced_into(d, self.clock.now(), expected)
        if following is None:
            return False
        reason = f"its late run would have run into the next slot, {iso(following)}, which runs instead"
        self.runner.claims.skip(d.job.name, Outcome.COALESCED)
        self.runner.claims.record_slot(d.job.name, d.slot, Outcome.COALESCED, reason)
        log.info("late slot coalesced into the next one", extra=fields(job=d.job.name, slot=iso(d.slot),
                                                                        into=iso(following)))
        return True

    def _busy(self, d: Dispatch, holder: Dispatch | None) -> None:
        """``d`` came while its job runs: here (``holder``), or on another replica (``holder`` None: the claim
        found the lease held). Its overlap policy decides (``appliance.worker.overlap``)."""
        job, claims = d.job, self.runner.claims
        if d.scheduled and d.attempt == 1 and d.waited:
            self._buffers.put_back(d)  # tried again and found the job still running: keeps its place
            if holder is None:
                self.after(REMOTE_POLL, lambda: self._pump(job.name))
        elif d.scheduled and d.attempt == 1:
            decision = decide(d, holder, self._buffers.waiting(job.name))
            if decision.verdict is Verdict.SKIP:
                self._skip_overlap(d, decision.reason)
                return
            if decision.displaced is not None:
                self._buffers.remove(decision.displaced)
                self._skip_overlap(decision.displaced, "a newer slot took its place (overlap = cancel_other)")
            if decision.verdict is Verdict.CANCEL:
                self._cancel_holder(d, holder)
            self._buffers.add(replace(d, waited=True))  # runs when the run before it ends (_run_task), or polled
            if holder is None:
                self.after(REMOTE_POLL, lambda: self._pump(job.name))
        elif d.scheduled:
            claims.record_slot(job.name, d.slot, Outcome.FAILED, "retry not run: a later run held the job")
        elif d.source is Source.QUEUED:
            with self._lock:
                self._deferred.add(job.name)
        elif d.backfill:
            self.pool.submit(lambda: self.backfills.release(d))

    def _skip_overlap(self, d: Dispatch, reason: str) -> None:
        claims = self.runner.claims
        claims.skip(d.job.name, Outcome.SKIPPED_OVERLAP)
        claims.record_slot(d.job.name, d.slot, Outcome.SKIPPED_OVERLAP, reason)
        claims.note_skipped(d.job.name, Outcome.SKIPPED_OVERLAP, reason)

    def _cancel_holder(self, d: Dispatch, holder: Dispatch | None) -> None:
        """overlap = cancel_other: the run holding the job stops at its next checkpoint, here or elsewhere."""
        if holder is not None and self.runner.cancel_by_newer_of(holder.job.name, holder.slot):
            return
        try:
            self.runner.claims.request_cancel(d.job.name)
        except redis.RedisError as exc:
            self._redis_down(exc)

    def _pump(self, name: str) -> None:
        """The run of ``name`` ended here, or a slot waits for one elsewhere: try the oldest waiting slot."""
        with self._lock:
            if len(self._running.get(name, ())) >= self.jobs[name].policy.max_concurrent:
                return  # a run of it is still going here: its end pumps again
        d = self._buffers.pop(name)
        if d is not None:
            self._waited(d)

    def _waited(self, d: Dispatch) -> None:
        """A slot that waited for the run before it: run it now, unless its grace ended meanwhile."""
        if (self.clock.now() - d.slot).total_seconds() > d.job.grace:
            reason = "buffered, but the run before it held the job until this slot's grace ended"
            self._skip_overlap(d, reason)
            self._pump(d.job.name)
            return
        self._dispatch(d)

    def _run_herd(self, herd: list[Dispatch]) -> None:
        """Claim the slots of one pass together (``appliance.worker.herd``): this worker's share first, the rest of
        the herd just before its instant (``appliance.worker.shares``)."""
        try:
            mine, rest = self.shares.split(herd)
        except Exception:  # sharing is a preference: claim the whole herd
            log.exception("herd not shared")
            mine, rest = herd, []
        if mine:
            self._claim_herd(mine, measure=True)
        if rest:
            wait = min((d.start - self.clock.now()).total_seconds() for d in rest) - REST_BEFORE
            if wait > 0:
                self.clock.sleep(wait)
            self._claim_herd(rest, measure=False)

    def _claim_herd(self, herd: list[Dispatch], measure: bool) -> None:
        """Claim ``herd`` together, then run each slot that holds its lease on a thread of the pool; a slot that
        does not run is settled here as its own task would settle it."""
        began = self.clock.monotonic()
        try:
            taken = take_herd(self.runner.claims, herd)
        except Exception as exc:  # noqa: BLE001 - a fault outside the jobs: each slot ends as its own task would
            for d in herd:
                self._run_task(d, self._crashed(d, exc))
            return
        if measure:
            self.lead.measured(self.clock.monotonic() - began)
        for d, answer in zip(herd, taken, strict=True):
            if isinstance(answer, Attempt):
                self._run_task(d, answer)
            else:
                self.pool.submit(functools.partial(self._run_task, d, answer))

    def _run_task(self, d: Dispatch, taken: OpenRun | Attempt | None = None) -> None:
        try:
            result = self.runner.execute(d) if taken is None else self.runner.execute(d, taken)
        except Exception as exc:  # noqa: BLE001 - a fault outside the job (the job's own are caught in the runner)
            result = self._crashed(d, exc)
        finally:
            with self._lock:
                runs = self._running.get(d.job.name, [])
                if d in runs:
                    runs.remove(d)
                deferred = d.job.name in self._deferred
                self._deferred.discard(d.job.name)
        self._after_attempt(d, result)
        if not result.wait:
            self._pump(d.job.name)
        if self.backfills.pending and not d.backfill:  # a backfill slot may have waited for this run
            self.backfills.poll_soon()
        # After a trigger, look for the next one at once; not while a service is down (it would spin). Nothing
        # else a run's end changes needs the loop now (timers wake it themselves): waking it at every end of a
        # herd would cost a pass over every job per run.
        if (not d.scheduled or deferred) and not result.unavailable:
            self.wake(refresh=True)

    def _crashed(self, d: Dispatch, exc: Exception) -> Attempt:
        """The runner itself failed (not the job): the slot still ends with a row that says so; a lease it may
        hold expires, and its open run is closed as abandoned by the next holder."""
        error = f"the worker could not run it: {type(exc).__name__}: {exc}"
        log.exception("run failed outside the job", extra=fields(job=d.job.name, slot=iso(d.slot)))
        if d.scheduled:
            self.runner.claims.record_slot(d.job.name, d.slot, Outcome.FAILED, error)
        return Attempt(None, Outcome.FAILURE, error=error)

    def _after_attempt(self, d: Dispatch, result: Attempt) -> None:
        job = d.job
        if d.backfill and self.backfills.settle(d, result):
            return
        if result.unavailable:
            if result.unavailable == "redis":
                self._redis_down(Exception(result.error))
            if d.scheduled:  # a first attempt or a retry: either runs when the services are back
                self._unavailable[job.name] = d
                self._arm_catch_up()
            return
        if result.claim is not None and self._redis_down_logged:
            log.info("Redis is back")
            self._redis_down_logged = False
        if result.retry:
            delay = self.config.core.retry_backoff * (5 ** (d.attempt - 1)) * random.uniform(0.8, 1.2)
            log.info("retry scheduled", extra=fields(job=job.name, attempt=d.attempt + 1, delay_s=round(delay, 3)))
            retry = d.again(result.request)
            self.after(delay, lambda: self._dispatch(retry))
        elif result.wait:
            # Held elsewhere: the policy buffers (it decides), or by the catch-up of an earlier slot (it waits).
            self._busy(d if d.job.policy.buffers else replace(d, waited=True), None)
        elif result.claim in (Claim.RUNNING, Claim.LOCKED):
            if d.scheduled:
                self._watch_holder(job, result.holder_pttl, d.slot if result.claim is Claim.RUNNING else None)
            elif d.source is Source.QUEUED:
                # The lease is busy elsewhere: serve the pending trigger as soon as it is free.
                self.after(max(result.holder_pttl, 0) / 1000 + 0.05,
                           lambda: self._dispatch(Dispatch(job, self.clock.now(), Source.QUEUED)))
