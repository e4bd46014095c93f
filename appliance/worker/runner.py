"""One attempt of one job: take the lease, run the job with a ``RunContext``, record the outcome, release.

The happy path costs two Redis round trips (``acquire`` and ``finish``). The outcome goes to the run history
in Redis and PostgreSQL, the Prometheus metrics and the alerter; the caller decides about retries.
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

from appliance import keys, locks, metrics
from appliance.config import Config, JobSettings
from appliance.context import CancelToken, RunContext
from appliance.errors import Cancelled, LockLost
from appliance.fencing import issue_fence
from appliance.locks import Claim
from appliance.logs import fields
from appliance.owner import iso, make_token, new_run_id, utcnow
from appliance.state import ClusterState
from appliance.worker.alerts import Alerter
from appliance.worker.leases import Lease, LeaseKeeper

log = logging.getLogger("appliance.worker.run")

_INSERT_RUN = (
    "INSERT INTO job_runs (run_id, job, slot, trigger, attempt, fence, worker, started_at, finished_at,"
    " duration_ms, outcome, processed, error, summary)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
#: A returned summary larger than this (as JSON) is not stored; the run record says so instead.
SUMMARY_LIMIT = 4096


def epoch_ms(dt: datetime) -> int:
    return int(round(dt.timestamp() * 1000))


@dataclass
class Attempt:
    """What happened: ``claim`` is the lease answer; ``outcome`` is set when the job ran or was refused."""

    claim: Claim | None
    outcome: str = ""
    error: str = ""
    holder_pttl: int = 0
    retry: bool = False
    trigger: dict[str, Any] | None = None


class Runner:
    def __init__(self, config: Config, client: redis.Redis, scripts: locks.Scripts, db, keeper: LeaseKeeper,
                 alerter: Alerter, worker_id: str, services: dict[str, Any] | None = None):
        self.config = config
        self.redis = client
        self.scripts = scripts
        self.db = db
        self.keeper = keeper
        self.alerter = alerter
        self.worker_id = worker_id
        self.state = ClusterState(client)
        self.services = services if services is not None else {}
        self.cancel_all = CancelToken()
        self._active: dict[int, CancelToken] = {}
        self._unreleased: dict[str, str] = {}  # job -> token whose release failed while Redis was down

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
        except redis.RedisError as exc:
            metrics.JOB_RUNS.labels(job.name, "skipped_unavailable").inc()
            return Attempt(None, "skipped_unavailable", error=str(exc))
        if claim is Claim.LOCKED and trigger is None:
            self.skip(job.name, "skipped_locked")
        if claim is not Claim.OK:
            return Attempt(claim, holder_pttl=pttl)
        if trigger is not None and trigger.get("take"):
            entry = self._take_trigger(job.name, token)
            if entry is None:
                return Attempt(Claim.DONE)
            kind = entry.get("reason") or "manual"
            trigger = {**entry, "reason": kind}
        if trigger is None:
            metrics.SCHEDULE_LAG.observe(max(0.0, (started - slot).total_seconds()))
        return self._run(job, slot, attempt, trigger, kind, run_id, started, token, slot_ms)

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

    def skip(self, job: str, outcome: str) -> None:
        metrics.JOB_RUNS.labels(job, outcome).inc()
        try:
            self.state.count(job, outcome)
        except redis.RedisError:
            pass

    def _run(self, job: JobSettings, slot: datetime, attempt: int, trigger: dict[str, Any] | None, kind: str,
             run_id: str, started: datetime, token: str, slot_ms: int | None) -> Attempt:
        cancel = CancelToken()
        if self.cancel_all.cancelled:
            cancel.cancel(self.cancel_all.reason)
        lease = self.keeper.hold(Lease(job.name, token, job.lock_ttl, cancel, on_lost=self._lost))
        ctx = RunContext(
            job=job.name, slot=slot, run_id=run_id, attempt=attempt, owner=token, config=self.config,
            redis=self.redis, db=self.db, trigger=kind, services=self.services, token=cancel,
            log=logging.LoggerAdapter(logging.getLogger(f"appliance.job.{job.name}"), {}),
            _fence_source=(lambda: self._issue_fence(job.name)) if self.db is not None else None,
        )
        self._active[id(ctx)] = cancel
        base = dict(job=job.name, slot=iso(slot), run_id=run_id, attempt=attempt, owner=token, trigger=kind)
        if trigger and trigger.get("by"):
            base["by"] = trigger["by"]
        log.info("run started", extra=fields(**base))
        t0 = time.perf_counter()
        outcome, error, trace, summary = "success", "", "", None
        try:
            summary = _summary(job.func(ctx))
        except Cancelled as exc:
            outcome, error = "cancelled", str(exc) or cancel.reason
        except LockLost as exc:
            outcome, error = "cancelled", str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure of a job is recorded and retried
            outcome, error, trace = "failure", f"{type(exc).__name__}: {exc}", traceback.format_exc()
        finally:
            self.keeper.drop(lease)
            self._active.pop(id(ctx), None)
        duration = time.perf_counter() - t0
        retry = outcome == "failure" and attempt <= job.max_retries
        final = outcome == "success" or (outcome == "failure" and not retry)
        record = {**base, "worker": self.worker_id, "started": iso(started), "finished": iso(utcnow()),
                  "duration_ms": round(duration * 1000, 3), "outcome": outcome, "processed": ctx.processed_count,
                  "error": error or None, "fence": ctx._fence, "summary": summary}
        streak = self._finish(job, token, record, slot_ms if final else None, ctx, lease)
        log.log(logging.INFO if outcome == "success" else logging.WARNING, "run ended",
                extra=fields(**base, duration_ms=record["duration_ms"], outcome=outcome, error=error or None,
                             processed=ctx.processed_count, retry=retry))
        self._observe(job, outcome, duration, ctx)
        if outcome == "failure":
            self.alerter.failed(job.name, error)
            if retry:
                metrics.RETRIES.labels(job.name).inc()
            else:
                self._dead_letter(job, slot, attempt, error, trace, run_id, kind)
        elif outcome == "success":
            self.alerter.succeeded(job.name, streak)
        self._store_history(record, slot)
        return Attempt(Claim.OK, outcome, error, retry=retry, trigger=trigger)

    def cancel_running(self, reason: str) -> None:
        """Ask every run in progress to stop at its next checkpoint (shutdown)."""
        self.cancel_all.cancel(reason)
        for token in list(self._active.values()):
            token.cancel(reason)

    def _finish(self, job: JobSettings, token: str, record: dict[str, Any], done_ms: int | None,
                ctx: RunContext, lease: Lease) -> int:
        """Release and record; returns the failure streak a success ended."""
        success_at = time.time() if record["outcome"] == "success" else None
        try:
            ours, streak = locks.finish(self.scripts, job.name, token, json.dumps(record), record["outcome"], done_ms,
                                self.config.core.history_limit, success_at, ctx.processed_count)
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

    def _observe(self, job: JobSettings, outcome: str, duration: float, ctx: RunContext) -> None:
        metrics.JOB_RUNS.labels(job.name, outcome).inc()
        metrics.JOB_DURATION.labels(job.name).observe(duration)
        if outcome == "success":
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

    def _issue_fence(self, job: str) -> int:
        with self.db.connection() as conn:
            return issue_fence(conn, job)

    def _store_history(self, record: dict[str, Any], slot: datetime) -> None:
        """Durable history in PostgreSQL; best effort, since the Redis history already holds the run."""
        if self.db is None:
            return
        summary = record["summary"]
        try:
            with self.db.connection(timeout=2) as conn:
                conn.execute(_INSERT_RUN, (
                    record["run_id"], record["job"], slot, record["trigger"], record["attempt"], record["fence"],
                    record["worker"], record["started"], record["finished"], record["duration_ms"],
                    record["outcome"], record["processed"], record["error"],
                    None if summary is None else json.dumps(summary),
                ))
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down must not fail the run's bookkeeping
            log.warning("run history not stored in PostgreSQL (it stays in Redis)",
                        extra=fields(job=record["job"], run_id=record["run_id"], error=type(exc).__name__))


def _summary(returned: Any) -> dict[str, Any] | None:
    """What a job returned, when it is a small JSON object; stored with its run record."""
    if not isinstance(returned, dict):
        return None
    text = json.dumps(returned, default=str)
    if len(text) > SUMMARY_LIMIT:
        return {"truncated": f"the summary was {len(text)} bytes of JSON; at most {SUMMARY_LIMIT} are kept"}
    return json.loads(text)
