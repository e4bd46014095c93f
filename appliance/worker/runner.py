"""One attempt of one job: take the lease, open the run in the ledger, run the job, record, release.

The happy path costs two Redis round trips (``acquire``, ``finish``) and two PostgreSQL statements (the
ledger's ``start``, which issues the fence before the job body runs, and ``finish``). The outcome goes to
the ledger and the Redis history, the Prometheus metrics and the alerter; the caller decides about retries.
Error texts and tracebacks are redacted here, before anything stores them.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from appliance.kernel import keys, locks, metrics
from appliance.config import Config
from appliance.kernel.catalog import JobSettings
from appliance.kernel.context import CancelToken, RunContext
from appliance.kernel.errors import Cancelled, LockLost
from appliance.kernel.ledger import Ledger, SlotRecord
from appliance.kernel.locks import Claim
from appliance.kernel.logs import fields
from appliance.kernel.outcomes import Outcome
from appliance.kernel.owner import iso, make_token, new_run_id, utcnow
from appliance.kernel.redaction import Redactor
from appliance.kernel.state import ClusterState
from appliance.worker.alerts import Alerter
from appliance.worker.leases import Lease, LeaseKeeper
from appliance.worker.recorder import Recorder

log = logging.getLogger("appliance.worker.run")

#: A returned summary larger than this (as JSON) is not stored; the run record says so instead.
SUMMARY_LIMIT = 4096
#: The slot outcome of each final run outcome (a retrying attempt leaves its slot open).
SLOT_OF = {Outcome.SUCCESS: Outcome.SUCCESS, Outcome.FAILURE: Outcome.DEAD_LETTERED,
           Outcome.CANCELLED: Outcome.CANCELLED, Outcome.LEASE_LOST: Outcome.LEASE_LOST,
           Outcome.ABANDONED: Outcome.ABANDONED}
#: Outcomes after which no replica should run the slot again (Redis ``done`` marker).
SETTLED = frozenset({Outcome.SUCCESS, Outcome.FAILURE, Outcome.CANCELLED})


def epoch_ms(dt: datetime) -> int:
    return int(round(dt.timestamp() * 1000))


@dataclass
class Attempt:
    """What happened: ``claim`` is the lease answer; ``outcome`` is set when the job ran or was refused.

    ``unavailable`` names the service (``redis`` or ``postgres``) that kept the slot from running.
    """

    claim: Claim | None
    outcome: str = ""
    error: str = ""
    holder_pttl: int = 0
    retry: bool = False
    trigger: dict[str, Any] | None = None
    unavailable: str = ""


@dataclass
class _Run:
    """A run that holds its lease and is open in the ledger."""

    job: JobSettings
    slot: datetime
    attempt: int
    kind: str
    run_id: str
    started: datetime
    token: str
    slot_ms: int | None
    fence: int | None
    by: str | None = None

    @property
    def scheduled(self) -> bool:
        return self.slot_ms is not None


class Runner:
    def __init__(self, config: Config, client: redis.Redis, scripts: locks.Scripts, db, keeper: LeaseKeeper,
                 alerter: Alerter, worker_id: str, services: dict[str, Any] | None = None,
                 ledger: Ledger | None = None, recorder: Recorder | None = None):
        self.config = config
        self.redis = client
        self.scripts = scripts
        self.db = db
        self.keeper = keeper
        self.alerter = alerter
        self.worker_id = worker_id
        self.ledger = ledger
        self.recorder = recorder or Recorder(ledger)
        self.redact = Redactor.from_config(config)
        self.state = ClusterState(client)
        self.services = services if services is not None else {}
        self.cancel_all = CancelToken()
        self._active: dict[int, CancelToken] = {}
        self._unreleased: dict[str, str] = {}  # job -> token whose release failed while Redis was down
        self._skipping: dict[str, Outcome] = {}  # job -> why its slots are being skipped (logged once)

    # -- taking the slot ------------------------------------------------------------------------------
    def execute(self, job: JobSettings, slot: datetime, attempt: int = 1,
                trigger: dict[str, Any] | None = None) -> Attempt:
        """Run ``job`` for ``slot`` if its lease can be taken.

        ``trigger`` is None for a scheduled slot (guarded by the per-slot marker); ``{"take": True}`` serves
        one pending cluster trigger (taken only once the lease is ours, so exactly one worker runs it); any
        other dict is a direct manual run (CLI, retry of a manual run) with ``reason`` and ``by``.
        """
        run_id, started = new_run_id(), utcnow()
        token = make_token(run_id, started)
        slot_ms = None if trigger is not None else epoch_ms(slot)
        kind = "schedule" if trigger is None else trigger.get("reason", "manual")
        running = {"worker": self.worker_id, "run_id": run_id, "slot": iso(slot), "started": iso(started),
                   "attempt": attempt, "trigger": kind}
        try:
            self._release_leftover(job.name)
            claim, pttl = locks.acquire(self.scripts, job.name, token, job.lock_ttl, slot_ms, json.dumps(running))
            if claim is Claim.LOCKED and trigger is None and attempt == 1 and self._until(slot) > 0:
                # Claimed ahead of the instant while the previous run still held the job: try again on it.
                time.sleep(self._until(slot))
                claim, pttl = locks.acquire(self.scripts, job.name, token, job.lock_ttl, slot_ms,
                                            json.dumps(running))
        except redis.RedisError as exc:
            metrics.JOB_RUNS.labels(job.name, Outcome.SKIPPED_UNAVAILABLE.value).inc()
            if trigger is None:
                self._slot_not_run(job, slot, attempt, Outcome.SKIPPED_UNAVAILABLE, f"Redis unavailable: {exc}")
            return Attempt(None, Outcome.SKIPPED_UNAVAILABLE, error=str(exc), unavailable="redis")
        if claim is not Claim.OK:
            if trigger is None and (claim is Claim.LOCKED or (claim is Claim.DONE and attempt > 1)):
                self._slot_not_run(job, slot, attempt, Outcome.SKIPPED_LOCKED, "an earlier run held the job")
            return Attempt(claim, holder_pttl=pttl)
        taken = None
        if trigger is not None and trigger.get("take"):
            taken = self._take_trigger(job.name, token)
            if taken is None:
                return Attempt(Claim.DONE)
            kind = taken.get("reason") or "manual"
            trigger = {**taken, "reason": kind}
        run = _Run(job, slot, attempt, kind, run_id, started, token, slot_ms, None,
                   (trigger or {}).get("by"))
        opened = self._open(run, taken)
        if opened is not None:
            return opened
        if trigger is None:
            self._running_again(job.name)
        return self._run(run, trigger)

    @staticmethod
    def _until(slot: datetime) -> float:
        return (slot - utcnow()).total_seconds()

    def _open(self, run: _Run, taken: dict[str, Any] | None) -> Attempt | None:
        """Open the run in the ledger (its fence is issued here); an Attempt when it must not run."""
        if self.ledger is None:
            return None
        try:
            started = self.ledger.start(run.job.name, run.slot, run.kind if not run.scheduled else "schedule",
                                        run.run_id, run.token, self.worker_id, run.attempt, run.started)
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: no fence, so the job must not run
            error = self.redact.text(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}")
            self._give_back(run.job.name, run.token, taken)
            metrics.JOB_RUNS.labels(run.job.name, Outcome.SKIPPED_UNAVAILABLE.value).inc()
            if run.scheduled:
                self._slot_not_run(run.job, run.slot, run.attempt, Outcome.SKIPPED_UNAVAILABLE, error)
            log.warning("slot not run: no fence without PostgreSQL", extra=fields(job=run.job.name, error=error))
            return Attempt(None, Outcome.SKIPPED_UNAVAILABLE, error=error, unavailable="postgres")
        if started.done:
            self._give_back(run.job.name, run.token, None)
            log.info("slot already committed; not run again", extra=fields(job=run.job.name, slot=iso(run.slot)))
            return Attempt(Claim.DONE)
        run.fence = started.fence
        return None

    def _give_back(self, job: str, token: str, taken: dict[str, Any] | None) -> None:
        """Release a lease that will not be used (and put a taken trigger back where it was)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            if taken is not None:
                pipe.rpush(keys.triggers(job), json.dumps(taken))
            pipe.hdel(keys.RUNNING, job)
            pipe.execute()
            locks.release(self.scripts, job, token)
        except redis.RedisError:
            self._unreleased[job] = token

    def _take_trigger(self, job: str, token: str) -> dict[str, Any] | None:
        """We hold the lease: take the trigger; if another worker already served it, give the lease back."""
        entry = self.state.take_trigger(job)
        if entry is None:
            locks.release(self.scripts, job, token)
            self.redis.hdel(keys.RUNNING, job)
        return entry

    def _release_leftover(self, job: str) -> None:
        """A lease whose release failed during a Redis outage may have survived a Redis restart (AOF):
        release it now, by its token, before taking a new one."""
        token = self._unreleased.get(job)
        if token is not None:
            locks.release(self.scripts, job, token)
            self._unreleased.pop(job, None)

    # -- slots that do not run ------------------------------------------------------------------------
    def skip(self, job: str, outcome: str) -> None:
        """Count a slot that did not run (metrics and the cluster counters)."""
        metrics.JOB_RUNS.labels(job, str(outcome)).inc()
        try:
            self.state.count(job, str(outcome))
        except redis.RedisError:
            pass

    def record_slot(self, job: str, slot: datetime, outcome: Outcome, reason: str | None = None) -> None:
        """Put a slot that did not run into the ledger (in the background; kept while PostgreSQL is down)."""
        self.recorder.put(SlotRecord(job, slot, outcome, self.worker_id, reason))

    def _slot_not_run(self, job: JobSettings, slot: datetime, attempt: int, outcome: Outcome, reason: str) -> None:
        """A scheduled slot that this attempt could not run. A first attempt is skipped; a retry that cannot
        run leaves its slot failed (the run before it failed)."""
        if attempt > 1:
            self.record_slot(job.name, slot, Outcome.FAILED, f"retry not run: {reason}")
            return
        if outcome is not Outcome.SKIPPED_UNAVAILABLE:  # counted by the caller: Redis may be the one down
            self.skip(job.name, outcome)
        self.record_slot(job.name, slot, outcome, reason)
        self.note_skipped(job.name, outcome, reason)

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

    # -- the run --------------------------------------------------------------------------------------
    def _run(self, run: _Run, trigger: dict[str, Any] | None) -> Attempt:
        job = run.job
        cancel = CancelToken()
        if self.cancel_all.cancelled:
            cancel.cancel(self.cancel_all.reason)
        lease = self.keeper.hold(Lease(job.name, run.token, job.lock_ttl, cancel, on_lost=self._lost,
                                       run_id=run.run_id))
        ctx = RunContext(
            job=job.name, slot=run.slot, run_id=run.run_id, attempt=run.attempt, owner=run.token,
            config=self.config, redis=self.redis, db=self.db, trigger=run.kind, services=self.services,
            token=cancel, log=logging.LoggerAdapter(logging.getLogger(f"appliance.job.{job.name}"), {}),
            issued_fence=run.fence,
        )
        self._active[id(ctx)] = cancel
        base = dict(job=job.name, slot=iso(run.slot), run_id=run.run_id, attempt=run.attempt, owner=run.token,
                    trigger=run.kind)
        if run.by:
            base["by"] = run.by
        log.info("run started", extra=fields(**base, fence=run.fence))
        outcome, error, trace, summary = Outcome.SUCCESS, "", "", None
        t0 = time.perf_counter()
        try:
            if run.scheduled:
                ctx.sleep(self._until(run.slot))  # claimed ahead: the body starts on the slot's instant
                metrics.SCHEDULE_LAG.observe(max(0.0, -self._until(run.slot)))
                t0 = time.perf_counter()
            summary = _summary(job.func(ctx))
        except Cancelled as exc:
            outcome = Outcome.LEASE_LOST if lease.lost else Outcome.CANCELLED
            error = str(exc) or cancel.reason
        except LockLost as exc:
            outcome, error = Outcome.LEASE_LOST, str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure of a job is recorded and retried
            outcome, error, trace = Outcome.FAILURE, f"{type(exc).__name__}: {exc}", traceback.format_exc()
        finally:
            self.keeper.drop(lease)
            self._active.pop(id(ctx), None)
        duration = time.perf_counter() - t0
        error, trace, summary = self.redact.text(error), self.redact.text(trace), self.redact.value(summary)
        retry = outcome is Outcome.FAILURE and run.attempt <= job.max_retries
        recorded = self._close(run, Outcome.RETRYING if retry else outcome, error, ctx, summary, duration)
        if recorded is Outcome.RETRYING:
            recorded = Outcome.FAILURE
        else:
            retry = False
        if recorded is Outcome.LEASE_LOST and not lease.lost:
            lease.lost = True
            self._lost(lease)
        record = {**base, "worker": self.worker_id, "started": iso(run.started), "finished": iso(utcnow()),
                  "duration_ms": round(duration * 1000, 3), "outcome": recorded.value,
                  "processed": ctx.processed_count, "error": error or None, "fence": run.fence, "summary": summary}
        done_ms = run.slot_ms if recorded in SETTLED and not retry else None
        streak = self._finish(job, run.token, record, done_ms, ctx, lease)
        log.log(logging.INFO if recorded is Outcome.SUCCESS else logging.WARNING, "run ended",
                extra=fields(**base, duration_ms=record["duration_ms"], outcome=recorded.value,
                             error=error or None, processed=ctx.processed_count, retry=retry))
        self._observe(job, recorded, duration, ctx)
        if recorded is Outcome.FAILURE:
            self.alerter.failed(job.name, error)
            if retry:
                metrics.RETRIES.labels(job.name).inc()
            else:
                self._dead_letter(job, run.slot, run.attempt, error, trace, run.run_id, run.kind)
        elif recorded is Outcome.SUCCESS:
            self.alerter.succeeded(job.name, streak)
        return Attempt(Claim.OK, recorded.value, error, retry=retry, trigger=trigger)

    def _close(self, run: _Run, outcome: Outcome, error: str, ctx: RunContext, summary: dict[str, Any] | None,
               duration: float) -> Outcome:
        """The run's end in the ledger; returns the outcome recorded there (a success whose fence went stale
        is ``lease_lost``). Kept for later when PostgreSQL cannot be reached."""
        if self.ledger is None:
            return outcome
        slot_outcome = SLOT_OF.get(outcome) if run.scheduled else None
        args = (run.run_id, outcome, slot_outcome, error or None, ctx.processed_count, summary,
                round(duration * 1000, 3), None)
        try:
            return self.ledger.finish(*args)
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: keep the end and write it when it is back
            log.warning("run end not yet in PostgreSQL; kept until it is back",
                        extra=fields(job=run.job.name, run_id=run.run_id, error=type(exc).__name__))
            self.recorder.put_finish(args)
            return outcome

    def abandon(self, lease: Lease, reason: str) -> None:
        """A run that did not stop in time (shutdown): record it abandoned and release its lease."""
        if self.ledger is not None and lease.run_id:
            try:
                self.ledger.finish(lease.run_id, Outcome.ABANDONED, Outcome.ABANDONED, None, 0, None, 0.0, reason)
            except Exception as exc:  # noqa: BLE001 - the next holder's start reconciles it instead
                log.warning("could not record an abandoned run", extra=fields(job=lease.job, error=type(exc).__name__))
        try:
            locks.release(self.scripts, lease.job, lease.token)
            self.redis.hdel(keys.RUNNING, lease.job)
        except redis.RedisError:
            pass

    def cancel_running(self, reason: str) -> None:
        """Ask every run in progress to stop at its next checkpoint (shutdown)."""
        self.cancel_all.cancel(reason)
        for token in list(self._active.values()):
            token.cancel(reason)

    def _finish(self, job: JobSettings, token: str, record: dict[str, Any], done_ms: int | None,
                ctx: RunContext, lease: Lease) -> int:
        """Release and record in Redis; returns the failure streak a success ended."""
        success_at = time.time() if record["outcome"] == Outcome.SUCCESS.value else None
        try:
            ours, streak = locks.finish(self.scripts, job.name, token, json.dumps(record), record["outcome"],
                                        done_ms, self.config.core.history_limit, success_at, ctx.processed_count)
        except redis.RedisError as exc:
            self._unreleased[job.name] = token
            log.warning("could not record the run in Redis; its lease is released when Redis is back",
                        extra=fields(job=job.name, error=str(exc)))
            return 0
        if not ours and not lease.lost:
            lease.lost = True
            self._lost(lease)
        return streak

    def _lost(self, lease: Lease) -> None:
        metrics.LOCK_LOST.labels(lease.job).inc()
        log.error("lease lost while running", extra=fields(job=lease.job, owner=lease.token))
        try:
            self.state.count(lease.job, "lock_lost")
        except redis.RedisError:
            pass

    def _observe(self, job: JobSettings, outcome: Outcome, duration: float, ctx: RunContext) -> None:
        metrics.JOB_RUNS.labels(job.name, outcome.value).inc()
        metrics.JOB_DURATION.labels(job.name).observe(duration)
        if outcome is Outcome.SUCCESS:
            metrics.LAST_SUCCESS.labels(job.name).set(time.time())
        if ctx.processed_count:
            metrics.ITEMS.labels(job.name).inc(ctx.processed_count)
        for kind, value in ctx.backlog.items():
            metrics.BACKLOG.labels(kind).set(value)

    def _dead_letter(self, job: JobSettings, slot: datetime, attempt: int, error: str, trace: str, run_id: str,
                     kind: str) -> None:
        metrics.DEAD_LETTERS.labels(job.name).inc()
        entry = {"job": job.name, "slot": iso(slot), "attempts": attempt, "error": error, "traceback": trace,
                 "run_id": run_id, "worker": self.worker_id, "trigger": kind}
        try:
            dead_id = self.state.add_dead_letter(entry)
            log.error("run moved to the dead-letter list", extra=fields(job=job.name, dead_letter=dead_id,
                                                                        attempts=attempt, error=error))
        except redis.RedisError as exc:
            log.error("could not store a dead letter", extra=fields(job=job.name, error=str(exc)))


def _summary(returned: Any) -> dict[str, Any] | None:
    """What a job returned, when it is a small JSON object; stored with its run record."""
    if not isinstance(returned, dict):
        return None
    text = json.dumps(returned, default=str)
    if len(text) > SUMMARY_LIMIT:
        return {"truncated": f"the summary was {len(text)} bytes of JSON; at most {SUMMARY_LIMIT} are kept"}
    return json.loads(text)
