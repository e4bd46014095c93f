"""Taking a slot: the lease in Redis, the queued trigger it serves, and the run's opening in the ledger.

A scheduled slot is claimed ``CLAIM_LEAD`` before its instant (see ``appliance.worker.loop``): the lease, the
fence and the run record are in place when the instant comes. The claim costs one Redis round trip
(``acquire``) and one PostgreSQL statement (the ledger's ``start``, which issues the fence); the slots of a herd
share one of each (``appliance.worker.herd``, which answers each slot with this module's own methods). A slot
that is not run is recorded here, in the background, with its reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime

import redis

from appliance.kernel.protocol import keys, locks
from appliance.kernel.protocol.ledger import Ledger, SlotRecord, Started
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso, make_token, new_run_id
from appliance.kernel.protocol.starts import StartBudget
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.runs import RunInProgress
from appliance.kernel.runtime import metrics, tracing
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.json_object import JsonObject
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.redaction import Redactor
from appliance.worker.dispatch import Attempt, Dispatch, Request, Source
from appliance.worker.overlap import request_cancel
from appliance.worker.recorder import Recorder

log = logging.getLogger("appliance.worker.run")

#: The reason of a slot nobody claimed before a later one finished (``Claim.PASSED``).
PASSED_OVER = "passed over: a later slot finished first (a worker whose clock is ahead took the job past it)"


def epoch_ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


@dataclass
class OpenRun:
    """A run that holds its job's lease and is open in the ledger; ``owner`` is the lease's owner token."""

    dispatch: Dispatch
    run_id: str
    started: datetime
    owner: str
    fence: int | None
    request: Request | None
    #: Monotonic time at which the acquire that took the lease was sent: the lease runs from there.
    sent: float | None = None
    #: The lease's name: the job's, or ``<job>:<slot>`` for a slot's own (overlap = allow).
    lease: str = ""
    #: When the job body starts: the planned start (jitter, MAX_STARTS_PER_SECOND), for a scheduled slot.
    start: datetime | None = None

    @property
    def slot_ms(self) -> int | None:
        return epoch_ms(self.dispatch.slot) if self.dispatch.scheduled else None

    @property
    def reason(self) -> str:
        if self.dispatch.scheduled:
            return "schedule"
        if self.dispatch.backfill:
            return "backfill"
        return self.request.reason if self.request else "manual"

    @property
    def params(self) -> JsonObject | None:
        """The parameters a trigger gave the run (checked again by the runner against the job's declaration)."""
        trigger = self.request.trigger if self.request else None
        return trigger.params if trigger else None


class Claims:
    def __init__(self, client: redis.Redis, scripts: locks.Scripts, ledger: Ledger | None, recorder: Recorder,
                 redact: Redactor, worker_id: str, clock: Clock = SYSTEM):
        self.redis = client
        self.scripts = scripts
        self.ledger = ledger
        self.recorder = recorder
        self.redact = redact
        self.worker_id = worker_id
        self.clock = clock
        self.state = ClusterState(client)
        #: Job -> the version of its effective spec this worker runs (``appliance.worker.specs``).
        self.spec_versions: dict[str, int] = {}
        #: MAX_STARTS_PER_SECOND's start ticks, when set.
        self.starts: StartBudget | None = None
        self._unreleased: dict[str, str] = {}  # job -> owner whose release failed while Redis was down
        self._skipping: dict[str, Outcome] = {}  # job -> why its slots are being skipped (logged once)

    def until(self, slot: datetime) -> float:
        return (slot - self.clock.now()).total_seconds()

    # -- the lease ------------------------------------------------------------------------------------
    def take(self, d: Dispatch) -> OpenRun | Attempt:
        """The lease, the trigger it serves and the ledger's opening; an ``Attempt`` when it will not run."""
        job, run_id, started = d.job, new_run_id(), self.clock.now()
        owner = make_token(run_id, started)
        slot_ms = epoch_ms(d.slot) if d.scheduled else None
        per_slot = d.scheduled and job.policy.per_slot
        lease = keys.slot_lease(job.name, iso(d.slot)) if per_slot else job.name
        running = self.running_json(d, run_id, started)
        try:
            self.release_leftover(job.name)
            sent = self.clock.monotonic()
            claim, pttl = self._acquire(d, lease, owner, slot_ms, running)
            if claim is Claim.LOCKED and d.scheduled and d.attempt == 1 and self.until(d.start) > 0:
                # Claimed ahead of the instant while the previous run still held the job: try again on it.
                self.clock.sleep(self.until(d.start))
                sent = self.clock.monotonic()
                claim, pttl = self._acquire(d, lease, owner, slot_ms, running)
        except redis.RedisError as exc:
            metrics.JOB_RUNS.labels(job.name, Outcome.SKIPPED_UNAVAILABLE.value).inc()
            if d.scheduled:
                self.slot_not_run(d, Outcome.SKIPPED_UNAVAILABLE, f"Redis unavailable: {exc}")
            return Attempt(None, Outcome.SKIPPED_UNAVAILABLE, error=str(exc), unavailable="redis")
        if claim is not Claim.OK:
            return self.not_taken(d, claim, pttl)
        request = d.request
        if d.source is Source.QUEUED:
            request = self._take_trigger(job.name, owner)
            if request is None:
                return Attempt(Claim.DONE)
            if request.trigger is not None and request.trigger.slot:  # the run is for the instant it names
                d = replace(d, slot=datetime.fromisoformat(request.trigger.slot.replace("Z", "+00:00")))
        run = OpenRun(d, run_id, started, owner, None, request, sent, lease, self.start_of(d))
        return self._open(run)

    def running_json(self, d: Dispatch, run_id: str, started: datetime) -> str:
        """What ``appliance:running`` says of the run while it lasts."""
        return json.dumps(RunInProgress(self.worker_id, run_id, iso(d.slot), iso(started), d.attempt, d.reason,
                                        d.catch_up).to_json())

    def _acquire(self, d: Dispatch, lease: str, owner: str, slot_ms: int | None, running: str) -> tuple[Claim, int]:
        if lease != d.job.name:
            assert slot_ms is not None
            return locks.acquire_slot(self.scripts, d.job.name, lease, owner, d.job.lock_ttl, slot_ms, running,
                                      d.job.policy.max_concurrent)
        return locks.acquire(self.scripts, d.job.name, owner, d.job.lock_ttl, slot_ms, running)

    def not_taken(self, d: Dispatch, claim: Claim, pttl: int) -> Attempt:
        """The lease was not ours: a first attempt of a slot that finds its job running waits when its overlap
        policy buffers or the run is the catch-up of an earlier slot; otherwise the slot's row says why."""
        first = d.scheduled and d.attempt == 1
        if claim is Claim.LOCKED and first and (d.job.policy.buffers or d.waited
                                                or self._held_by_catch_up(d.job.name, d.slot)):
            return Attempt(claim, holder_pttl=pttl, wait=True)
        if claim is Claim.LOCKED and first:
            reason = (f"{d.job.policy.max_concurrent} runs of the job were running (overlap = allow, max_concurrent)"
                      if d.job.policy.per_slot else "its job was running on another worker (overlap = skip)")
            self.slot_not_run(d, Outcome.SKIPPED_OVERLAP, reason)
        elif d.scheduled and (claim is Claim.LOCKED or (claim in (Claim.DONE, Claim.PASSED) and d.attempt > 1)):
            self.slot_not_run(d, Outcome.SKIPPED_LOCKED, "an earlier run held the job")
        elif claim is Claim.PASSED and d.scheduled:
            self.passed_over(d)
        return Attempt(claim, holder_pttl=pttl)

    def start_of(self, d: Dispatch) -> datetime:
        """When the run's body starts: the planned start, moved on to a free start tick when
        MAX_STARTS_PER_SECOND is set (``appliance.kernel.protocol.starts``); at once for a manual run."""
        if not d.scheduled:
            return self.clock.now()
        if self.starts is None:
            return d.start
        try:
            return self.starts.reserve(d.start, self.clock.now())
        except redis.RedisError:
            return d.start  # the budget spreads starts; without Redis it cannot, and the lease was ours

    def request_cancel(self, job: str) -> None:
        """overlap = cancel_other: ask the run holding ``job``, wherever it is, to stop at its next checkpoint."""
        run_id = request_cancel(self.redis, job)
        if run_id:
            log.info("asked the running run to stop for a newer slot", extra=fields(job=job, run_id=run_id))

    def _open(self, run: OpenRun) -> OpenRun | Attempt:
        """Open the run in the ledger (its fence is issued here)."""
        d = run.dispatch
        if self.ledger is None:
            return run
        try:
            if d.backfill:
                started = self.ledger.start_backfill(d.job.name, d.slot, run.run_id, run.owner, self.worker_id,
                                                     d.attempt, run.started)
            else:
                started = self.ledger.open(d.job.name, d.slot, run.reason, run.run_id, run.owner, self.worker_id,
                                           d.attempt, run.started, run.start if d.scheduled else None,
                                           self.spec_versions.get(d.job.name), run.lease != d.job.name,
                                           params=self.redact.value(run.params))
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: no fence, so the job must not run
            return self.not_opened(run, exc)
        return self.opened(run, started)

    def not_opened(self, run: OpenRun, exc: Exception) -> Attempt:
        """The ledger could not open the run: no fence, so it does not run; its lease is given back."""
        d = run.dispatch
        error = self.redact.text(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}")
        self.give_back(run.lease, run.owner, run.request if d.source is Source.QUEUED else None)
        metrics.JOB_RUNS.labels(d.job.name, Outcome.SKIPPED_UNAVAILABLE.value).inc()
        if d.scheduled:
            self.slot_not_run(d, Outcome.SKIPPED_UNAVAILABLE, error)
        log.warning("slot not run: no fence without PostgreSQL", extra=fields(job=d.job.name, error=error))
        return Attempt(None, Outcome.SKIPPED_UNAVAILABLE, error=error, unavailable="postgres")

    def opened(self, run: OpenRun, started: Started) -> OpenRun | Attempt:
        """The ledger's answer to a run's opening: its fence, or the slot found done (then it does not run)."""
        d = run.dispatch
        if started.done and d.backfill:
            self.give_back(d.job.name, run.owner, None)
            log.info("backfill slot committed already; not run", extra=fields(job=d.job.name, slot=iso(d.slot)))
            return Attempt(Claim.DONE)
        if started.done:
            self.give_back(run.lease, run.owner, None)
            log.info("slot already committed, or a later one; not run again",
                     extra=fields(job=d.job.name, slot=iso(d.slot)))
            if d.scheduled and d.attempt == 1:
                self.passed_over(d)  # PostgreSQL's done slot is this one or a later one: Redis had lost the marker
            elif d.scheduled:  # a row of the slot's own success, if it is one, outranks this
                self.record_slot(d.job.name, d.slot, Outcome.FAILED, "retry not run: a later slot ran first")
            return Attempt(Claim.DONE)
        run.fence = started.fence
        if d.scheduled:
            self._running_again(d.job.name)
        return run

    def _held_by_catch_up(self, job: str, slot: datetime) -> bool:
        """Whether the run holding ``job`` is the catch-up of a slot before ``slot`` (which then waits for it)."""
        try:
            held = self.redis.hget(keys.RUNNING, job)
        except redis.RedisError:
            return False
        if not held:
            return False
        run = RunInProgress.from_json(json.loads(held))
        return run.catch_up and run.slot < iso(slot)

    def give_back(self, job: str, owner: str, taken: Request | None) -> None:
        """Release a lease that will not be used (and put a taken trigger back where it was)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            if taken is not None and taken.trigger is not None:
                pipe.rpush(keys.triggers(job), json.dumps(taken.trigger.to_json()))
            pipe.hdel(keys.RUNNING, job)
            pipe.execute()
            locks.release(self.scripts, job, owner)
        except redis.RedisError:
            self._unreleased[job] = owner

    def keep_for_release(self, job: str, owner: str) -> None:
        """A lease whose release failed (Redis down): released by its owner before the next claim."""
        self._unreleased[job] = owner

    def _take_trigger(self, job: str, owner: str) -> Request | None:
        """We hold the lease: take the trigger; if another worker already served it, give the lease back. The
        trigger becomes the run's request (``give_back`` puts it back as it was)."""
        trigger = self.state.triggers.take(job)
        if trigger is None:
            locks.release(self.scripts, job, owner)
            self.redis.hdel(keys.RUNNING, job)
            return None
        return Request.of(trigger)

    def release_leftover(self, job: str) -> None:
        """A lease whose release failed during a Redis outage may have survived a Redis restart (AOF):
        release it now, by its owner, before taking a new one."""
        owner = self._unreleased.get(job)
        if owner is not None:
            locks.release(self.scripts, job, owner)
            self._unreleased.pop(job, None)

    # -- slots that do not run ------------------------------------------------------------------------
    def skip(self, job: str, outcome: str) -> None:
        """Count a slot that did not run (metrics and the cluster counters)."""
        metrics.JOB_RUNS.labels(job, str(outcome)).inc()
        with contextlib.suppress(redis.RedisError):
            self.state.history.count(job, str(outcome))

    def record_slot(self, job: str, slot: datetime, outcome: Outcome, reason: str | None = None,
                    traced: bool = True) -> None:
        """Put a slot that did not run into the ledger (in the background; kept while PostgreSQL is down), and
        its outcome on the slot's span (unless not ``traced``)."""
        self.recorder.put(SlotRecord(job, slot, outcome, self.worker_id, reason))
        if traced and tracing.enabled():  # spans leave the appliance: the reason is masked like every output
            tracing.slot_not_run(job, slot, outcome, self.redact.text(reason) if reason else reason)

    def slot_not_run(self, d: Dispatch, outcome: Outcome, reason: str) -> None:
        """A scheduled slot that this attempt could not run. A first attempt is skipped; a retry held off by
        the job's next holder leaves its slot failed (the run before it failed). A retry an outage kept from
        running is not recorded yet: the loop runs it when the services are back, or records it failed when
        its grace ends."""
        if d.attempt > 1:
            if outcome is not Outcome.SKIPPED_UNAVAILABLE:
                self.record_slot(d.job.name, d.slot, Outcome.FAILED, f"retry not run: {reason}")
            return
        if outcome is not Outcome.SKIPPED_UNAVAILABLE:  # counted by the caller: Redis may be the one down
            self.skip(d.job.name, outcome)
        self.record_slot(d.job.name, d.slot, outcome, reason)
        self.note_skipped(d.job.name, outcome, reason)

    def passed_over(self, d: Dispatch) -> None:
        """A later slot finished before this first attempt claimed its own. The slot ran before it (its row
        outranks ``missed``: nothing changes) or nobody claimed it: a worker whose clock is ahead took the job
        past it, as when it joins a cluster running behind it. Its row then says so. Not counted: the worker
        cannot tell which of the two it was without asking PostgreSQL."""
        self.record_slot(d.job.name, d.slot, Outcome.MISSED, PASSED_OVER)

    def note_skipped(self, job: str, outcome: Outcome, reason: str) -> None:
        """Log slots skipped once per change of state (not once per slot), and once when they run again."""
        if self._skipping.get(job) != outcome:
            self._skipping[job] = outcome
            log.warning("slots skipped until further notice", extra=fields(job=job, outcome=outcome.value,
                                                                             reason=reason))

    def _running_again(self, job: str) -> None:
        was = self._skipping.pop(job, None)
        if was is not None:
            log.info("slots run again", extra=fields(job=job, after=was.value))
