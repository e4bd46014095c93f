"""One attempt of one job: claim it (``appliance.worker.claim``), run the job with a ``RunContext``, record
the outcome, release.

The happy path costs two Redis round trips (``acquire``, ``finish``) and two PostgreSQL statements (the
ledger's ``start``, which issues the fence before the job body runs, and ``finish``) for a run alone; the runs of
a herd share them: one acquire and one opening statement for every slot of the instant (``appliance.worker.herd``),
and their ends go out together (``appliance.worker.ends``). The outcome goes to
the ledger and the Redis history, the Prometheus metrics and the alerter; the caller decides about retries.
Error texts and tracebacks are redacted here, before anything stores them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from typing import Any

import redis

from appliance.config import Config
from appliance.errors import Cancelled, LockLost
from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.contract.context import CancelToken, RunContext
from appliance.kernel.contract.params import validate
from appliance.kernel.contract.policy import Isolation
from appliance.kernel.protocol import keys, locks
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.protocol.ledger_batches import Ending
from appliance.kernel.protocol.locks import Claim, End
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.runs import RunRecord
from appliance.kernel.runtime import metrics, tracing
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.redaction import Redactor
from appliance.worker.alerts import Alerter
from appliance.worker.claim import Claims, OpenRun
from appliance.worker.dispatch import Attempt, Dispatch
from appliance.worker.ends import RunEnds
from appliance.worker.isolation import RunFailed, run_job
from appliance.worker.leases import Lease, LeaseKeeper
from appliance.worker.recorder import Recorder
from appliance.worker.timeouts import Timeouts
from appliance.worker.together import StartTogether

log = logging.getLogger("appliance.worker.run")

#: A returned summary larger than this (as JSON) is not stored; the run record says so instead.
SUMMARY_LIMIT = 4096
#: The slot outcome of each final run outcome (a retrying attempt leaves its slot open).
SLOT_OF = {Outcome.SUCCESS: Outcome.SUCCESS, Outcome.FAILURE: Outcome.DEAD_LETTERED,
           Outcome.CANCELLED: Outcome.CANCELLED, Outcome.LEASE_LOST: Outcome.LEASE_LOST,
           Outcome.ABANDONED: Outcome.ABANDONED, Outcome.TIMED_OUT: Outcome.TIMED_OUT,
           Outcome.CANCELLED_BY_NEWER: Outcome.CANCELLED_BY_NEWER}
#: Outcomes after which no replica should run the slot again (Redis ``done`` marker).
SETTLED = frozenset({Outcome.SUCCESS, Outcome.FAILURE, Outcome.CANCELLED, Outcome.TIMED_OUT,
                     Outcome.CANCELLED_BY_NEWER})


class Runner:
    def __init__(self, config: Config, client: redis.Redis, scripts: locks.Scripts, db, keeper: LeaseKeeper,
                 alerter: Alerter, worker_id: str, services: dict[str, Any] | None = None,
                 ledger: Ledger | None = None, recorder: Recorder | None = None, clock: Clock = SYSTEM):
        self.config = config
        self.redis = client
        self.scripts = scripts
        self.db = db
        self.keeper = keeper
        self.alerter = alerter
        self.worker_id = worker_id
        self.ledger = ledger
        self.recorder = recorder or Recorder(ledger)
        self.clock = clock
        self.redact = Redactor.from_config(config)
        self.claims = Claims(client, scripts, ledger, self.recorder, self.redact, worker_id, clock)
        self.state = ClusterState(client)
        self.services = services if services is not None else {}
        self.cancel_all = CancelToken(clock)
        self._active: dict[int, CancelToken] = {}
        #: Run id -> (job, slot, cancel token) of the runs in progress here (overlap = cancel_other).
        self._runs: dict[str, tuple[str, Any, CancelToken]] = {}
        self.timeouts = Timeouts(clock, config.core.shutdown_timeout, self._ended_hard)
        #: Seconds the last run of each job took here (how long a catch-up of it is expected to take).
        self.durations: dict[str, float] = {}
        self.together = StartTogether()
        #: Runs' ends in the ledger and in Redis, each sent with the others waiting (one flight per instant).
        self.ends = RunEnds(ledger, scripts, config.core.history_limit)

    def execute(self, d: Dispatch, taken: OpenRun | Attempt | None = None) -> Attempt:
        """Run ``d`` if its job's lease can be taken (and, for a queued trigger, the trigger is still there),
        under the slot's span (``appliance.kernel.runtime.tracing``): the claim, the run and their calls.
        ``taken``: the claim's answer when ``d`` was claimed already, with its herd (``appliance.worker.herd``)."""
        with tracing.slot_span(d.job.name, d.slot, d.reason, d.attempt) as span:
            claimed = taken if taken is not None else self.claims.take(d)
            if isinstance(claimed, Attempt):
                span.set(claim=claimed.claim.value if claimed.claim else None)
                if claimed.outcome is not None:
                    span.outcome(claimed.outcome, claimed.error)
                return claimed
            span.set(run_id=claimed.run_id, fence=claimed.fence, trigger=claimed.reason,
                     slot=claimed.dispatch.slot)
            attempt = self._run(claimed)
            span.set(retry=attempt.retry or None)
            if attempt.outcome is not None:
                span.outcome(attempt.outcome, attempt.error)
            return attempt

    # -- the run --------------------------------------------------------------------------------------
    def _run(self, run: OpenRun) -> Attempt:
        d, job = run.dispatch, run.dispatch.job
        cancel = CancelToken(self.clock)
        if self.cancel_all.cancelled:
            cancel.cancel(self.cancel_all.reason)
        lease = self.keeper.hold(Lease(job.name, run.owner, job.lock_ttl, cancel, confirmed=run.sent,
                                       on_lost=self._lost, run_id=run.run_id, clock=self.clock,
                                       name="" if run.lease == job.name else run.lease))
        ctx = RunContext(
            job=job.name, slot=d.slot, run_id=run.run_id, attempt=d.attempt, owner=run.owner,
            config=self.config, redis=self.redis, db=self.db, trigger=run.reason, services=self.services,
            cancel=cancel, log=logging.LoggerAdapter(logging.getLogger(f"appliance.job.{job.name}"), {}),
            issued_fence=run.fence,
        )
        self._active[id(ctx)] = cancel
        self._runs[run.run_id] = (job.name, d.slot, cancel)
        base = dict(job=job.name, slot=iso(d.slot), run_id=run.run_id, attempt=d.attempt, owner=run.owner,
                    trigger=run.reason)
        by = run.request.by if run.request and run.request.by else None
        if by:
            base["by"] = by
        log.info("run started", extra=fields(**base, fence=run.fence))
        try:
            outcome, error, trace, summary, duration = self._body(d, ctx, lease, run.start, run.params)
            self.durations[job.name] = duration
        finally:
            self.timeouts.drop(run.run_id)
            self.keeper.drop(lease)
            self._active.pop(id(ctx), None)
            self._runs.pop(run.run_id, None)
        if d.scheduled:
            self.together.settle(d.slot)
        error, trace, summary = self.redact.text(error), self.redact.text(trace), self.redact.value(summary)
        retry = outcome is Outcome.FAILURE and d.attempt <= job.max_retries
        recorded = self._close(run, Outcome.RETRYING if retry else outcome, error, ctx, summary, duration)
        if recorded is Outcome.RETRYING:
            recorded = Outcome.FAILURE
        else:
            retry = False
        if recorded is Outcome.LEASE_LOST and not lease.lost:
            lease.lost = True
            self._lost(lease)
        if lease.lost:
            self._count_lost(job.name, recorded)
        record = RunRecord(job=job.name, slot=iso(d.slot), run_id=run.run_id, attempt=d.attempt, owner=run.owner,
                           trigger=run.reason, by=by, worker=self.worker_id, started=iso(run.started),
                           finished=iso(self.clock.now()), duration_ms=round(duration * 1000, 3),
                           outcome=recorded.value, processed=ctx.processed_count, error=error or None,
                           fence=run.fence, summary=summary, params=self.redact.value(run.params))
        done_ms = run.slot_ms if recorded in SETTLED and not retry else None
        streak, warned = self._finish(job, run.owner, record, done_ms, ctx, lease, run.lease)
        log.log(logging.INFO if recorded is Outcome.SUCCESS else logging.WARNING, "run ended",
                extra=fields(**base, duration_ms=record.duration_ms, outcome=recorded.value,
                             error=error or None, processed=ctx.processed_count, retry=retry))
        self._observe(job, recorded, duration, ctx)
        if recorded is Outcome.FAILURE:
            self.alerter.failed(job.name, error)
            if retry:
                metrics.RETRIES.labels(job.name).inc()
            else:
                self._dead_letter(run, error, trace)
        elif recorded is Outcome.SUCCESS:
            self.alerter.succeeded(job.name, streak, warned)
        return Attempt(Claim.OK, recorded, error, retry=retry, request=run.request)

    def _body(self, d: Dispatch, ctx: RunContext, lease: Lease,
              start: Any = None, given: dict[str, Any] | None = None) -> tuple[Outcome, str, str, Any, float]:
        """The job itself, on its planned start: (outcome, error, traceback, summary, seconds). ``given``: a
        trigger's parameters, checked again against this worker's declaration (a run with parameters that no
        longer fit fails, saying which)."""
        outcome, error, trace, summary = Outcome.SUCCESS, "", "", None
        t0 = self.clock.monotonic()
        lag: float | None = None
        start = start or d.slot
        if d.scheduled:
            self.together.claimed(start)
        try:
            ctx.params.update(validate(d.job.name, d.job.params, given))
            if d.scheduled:
                try:
                    ctx.sleep(self.claims.until(start))  # claimed ahead: the body starts on its planned start
                finally:
                    self.together.started(start)
                lag = max(0.0, -self.claims.until(start))  # observed after the body: the metric takes a lock
                t0 = self.clock.monotonic()
            if d.job.policy.timeout:
                self.timeouts.watch(ctx.run_id, d.job.policy.timeout, ctx.cancel, lease,
                                    end_hard=d.job.policy.isolation is Isolation.THREAD)
            with tracing.job_calls():
                summary = _summary(run_job(d.job, ctx, self.config.core.shutdown_timeout))
        except Cancelled as exc:
            outcome = Outcome.LEASE_LOST if lease.lost else Outcome(ctx.cancel.outcome)
            error = str(exc) or ctx.cancel.reason
        except LockLost as exc:
            outcome, error = Outcome.LEASE_LOST, str(exc)
        except RunFailed as exc:  # isolation = process: the child's own error and traceback
            outcome, error, trace = Outcome.FAILURE, str(exc), exc.trace
        except Exception as exc:  # noqa: BLE001 - any failure of a job is recorded and retried
            outcome, error, trace = Outcome.FAILURE, f"{type(exc).__name__}: {exc}", traceback.format_exc()
        if lag is not None:
            metrics.SCHEDULE_LAG.observe(lag)
        return outcome, error, trace, summary, self.clock.monotonic() - t0

    def _close(self, run: OpenRun, outcome: Outcome, error: str, ctx: RunContext,
               summary: dict[str, Any] | None, duration: float) -> Outcome:
        """The run's end in the ledger; returns the outcome recorded there (a success whose fence went stale
        is ``lease_lost``). Kept for later when PostgreSQL cannot be reached."""
        if self.ledger is None:
            return outcome
        d = run.dispatch
        slot_outcome = SLOT_OF.get(outcome) if d.scheduled or d.backfill else None
        args = (run.run_id, outcome, slot_outcome, error or None, ctx.processed_count, summary,
                round(duration * 1000, 3), None, d.backfill)
        try:
            if d.backfill:
                return self.ledger.finish(*args)
            return self.ends.ledger(Ending(d.job.name, *args[:-1]))
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: keep the end and write it when it is back
            log.warning("run end not yet in PostgreSQL; kept until it is back",
                        extra=fields(job=run.dispatch.job.name, run_id=run.run_id, error=type(exc).__name__))
            self.recorder.put_finish(args)
            return outcome

    def abandon(self, lease: Lease, reason: str, outcome: Outcome = Outcome.ABANDONED) -> None:
        """A run that did not stop in time (shutdown, or past its timeout): record it and release its lease."""
        if self.ledger is not None and lease.run_id:
            try:
                self.ledger.finish(lease.run_id, outcome, outcome, None, 0, None, 0.0, reason)
            except Exception as exc:  # noqa: BLE001 - the next holder's start reconciles it instead
                log.warning("could not record an abandoned run", extra=fields(job=lease.job, error=type(exc).__name__))
        try:
            locks.release(self.scripts, lease.name or lease.job, lease.owner)
            self.redis.hdel(keys.RUNNING, lease.name or lease.job)
        except redis.RedisError:
            pass

    def _ended_hard(self, lease: Lease, reason: str) -> None:
        """A thread-isolated run still going ``SHUTDOWN_TIMEOUT`` after its timeout: it cannot be killed, so it is
        recorded ``timed_out`` and its lease released (its fence keeps a late commit out once another run
        holds the job); ``isolation = process`` runs are killed instead (``appliance.worker.isolation``)."""
        self.keeper.drop(lease)
        self.abandon(lease, reason, Outcome.TIMED_OUT)
        log.error("a run did not stop after its timeout; recorded timed_out and its lease released "
                  "(isolation = process would have ended it)", extra=fields(job=lease.job, run_id=lease.run_id))

    def cancel_by_newer(self, run_id: str) -> bool:
        """overlap = cancel_other: stop run ``run_id`` at its next checkpoint if it runs here."""
        found = self._runs.get(run_id)
        if found is None:
            return False
        found[2].cancel("a newer slot's run took the job (overlap = cancel_other)", Outcome.CANCELLED_BY_NEWER.value)
        return True

    def cancel_by_newer_of(self, job: str, slot: Any) -> bool:
        """The same, for the run of ``job``'s ``slot`` here."""
        for run_id, (name, run_slot, _) in list(self._runs.items()):
            if name == job and run_slot == slot:
                return self.cancel_by_newer(run_id)
        return False

    def cancel_running(self, reason: str) -> None:
        """Ask every run in progress to stop at its next checkpoint (shutdown)."""
        self.cancel_all.cancel(reason)
        for cancel in list(self._active.values()):
            cancel.cancel(reason)

    def _finish(self, job: JobSettings, owner: str, record: RunRecord, done_ms: int | None,
                ctx: RunContext, lease: Lease, lease_name: str = "") -> tuple[int, bool]:
        """Release and record in Redis; returns the failure streak a success ended and whether the job's
        "failing often" warning is on."""
        success_at = self.clock.time() if record.outcome == Outcome.SUCCESS.value else None
        try:
            ours, streak, warned = self.ends.redis(End(
                job.name, owner, json.dumps(record.to_json()), record.outcome, done_ms, success_at,
                ctx.processed_count, lease_name if lease_name and lease_name != job.name else None))
        except redis.RedisError as exc:
            self.claims.keep_for_release(job.name, owner)
            log.warning("could not record the run in Redis; its lease is released when Redis is back",
                        extra=fields(job=job.name, error=str(exc)))
            return 0, False
        if not ours and not lease.lost:
            lease.lost = True
            self._lost(lease)
            self._count_lost(job.name, Outcome(record.outcome))
        return streak, warned

    def _lost(self, lease: Lease) -> None:
        """Called by the lease keeper's threads: no I/O but the log (a partition must not hold them)."""
        metrics.count_lease_lost(lease.job)
        log.error("lease lost while running", extra=fields(job=lease.job, owner=lease.owner,
                                                           reason=lease.cancel.reason))

    def _count_lost(self, job: str, recorded: Outcome) -> None:
        """The cluster counter of lost leases (``<job>:lease_lost``), counted by the run's own thread once the
        run has ended; a run recorded ``lease_lost`` was counted by its FINISH already."""
        with contextlib.suppress(redis.RedisError):
            self.state.history.count_lease_lost(job, recorded)

    def _observe(self, job: JobSettings, outcome: Outcome, duration: float, ctx: RunContext) -> None:
        metrics.JOB_RUNS.labels(job.name, outcome.value).inc()
        metrics.JOB_DURATION.labels(job.name).observe(duration)
        if outcome is Outcome.SUCCESS:
            metrics.LAST_SUCCESS.labels(job.name).set(self.clock.time())
        if ctx.processed_count:
            metrics.ITEMS.labels(job.name).inc(ctx.processed_count)
        for kind, value in ctx.backlog.items():
            metrics.BACKLOG.labels(kind).set(value)

    def _dead_letter(self, run: OpenRun, error: str, trace: str) -> None:
        d = run.dispatch
        metrics.DEAD_LETTERS.labels(d.job.name).inc()
        try:
            dead_id = self.state.dead_letters.add(d.job.name, slot=iso(d.slot), attempts=d.attempt, error=error,
                                                  traceback=trace, run_id=run.run_id, worker=self.worker_id,
                                                  trigger=run.reason)
            log.error("run moved to the dead-letter list", extra=fields(job=d.job.name, dead_letter=dead_id,
                                                                        attempts=d.attempt, error=error))
        except redis.RedisError as exc:
            log.error("could not store a dead letter", extra=fields(job=d.job.name, error=str(exc)))


def _summary(returned: Any) -> dict[str, Any] | None:
    """What a job returned, when it is a small JSON object; stored with its run record."""
    if not isinstance(returned, dict):
        return None
    text = json.dumps(returned, default=str)
    if len(text) > SUMMARY_LIMIT:
        return {"truncated": f"the summary was {len(text)} bytes of JSON; at most {SUMMARY_LIMIT} are kept"}
    return json.loads(text)
