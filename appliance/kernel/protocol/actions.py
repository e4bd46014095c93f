"""Operator actions, one way for every door: the CLI, the admin API (and the dashboard through it), and what a
worker does by itself (a pause that ends at its ``until``).

Each action checks its input first (``Refused``: exit 2 or 400, one clear message, nothing changed), changes the
cluster's state, and writes its audit row: in PostgreSQL's audit log, the record of truth
(``appliance.kernel.protocol.audit_log``), and in Redis' recent audit trail (``/api/audit``). When PostgreSQL
cannot be written the action stands (it is in Redis) and ``warnings`` says the row is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from appliance.errors import ApplianceError
from appliance.kernel.contract.params import Param, ParamError, validate
from appliance.kernel.protocol import audit_log, backfill, keys, resume
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.dead_letters import DeadLetter
from appliance.kernel.protocol.state.leases import LeaseView
from appliance.kernel.protocol.state.pauses import Pause
from appliance.kernel.runtime.redaction import Redactor
from appliance.kernel.schedule.model import Schedule, parse_schedule

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


class Refused(ApplianceError):
    """Bad input for an action: nothing was changed (exit 2, HTTP 400)."""


@dataclass(frozen=True)
class PlanJob:
    """A published job as backfill planning needs it."""

    name: str
    lock_ttl: float
    grace: float
    schedule: Schedule


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone); ``Refused`` naming ``what`` otherwise."""
    try:
        when = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise Refused(f"{what} must be an ISO 8601 time such as 2026-01-31T06:00:00Z, not {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass
class Actions:
    state: ClusterState
    connect: Connect
    redact: Redactor
    #: ``CLOCK_SKEW_WARN``: a backfill leaves to the live schedule the slots a worker that far behind may still run.
    skew: float = 1.0
    warnings: list[str] = field(default_factory=list)

    # -- the audit row --------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str, reason: str | None = None, before: Any = None,
              after: Any = None, detail: str = "") -> None:
        self.state.audit.record(actor, action, target, self.redact.text(detail or reason or ""))
        try:
            with self.connect() as conn:
                audit_log.record(conn, self.redact, actor, action, target, reason or None, before, after,
                                 detail or None)
        except Exception as exc:  # noqa: BLE001 - the action stands; say the row is missing
            self.warnings.append(f"the audit log could not be written ({type(exc).__name__}: PostgreSQL "
                                 "unavailable?): this action is in Redis' audit trail only")

    # -- triggers -------------------------------------------------------------------------------------
    def trigger(self, actor: str, job: str, params: Mapping[str, Any] | None = None, slot: str | None = None,
                reason: str = "manual", why: str | None = None) -> str:
        """``reason``: what the run's trigger says (``manual``); ``why``: the operator's reason, audited."""
        published = self.state.jobs.published(job)
        values = None
        if params:
            if not isinstance(params, Mapping):
                raise Refused("params must be an object of parameter names and values")
            try:
                checked = validate(job, [Param.from_json(p) for p in published.params], params)
            except ParamError as exc:
                raise Refused(str(exc)) from None
            values = {name: checked[name] for name in params}
        at = iso(parse_time(slot, "--slot")) if slot else None
        trigger_id = self.state.triggers.request(job, actor, reason, params=values, slot=at)
        self.audit(actor, "job.trigger", job, why, after={"trigger_id": trigger_id, "params": values, "slot": at},
                   detail=trigger_id)
        return trigger_id

    # -- pauses ---------------------------------------------------------------------------------------
    def pause(self, actor: str, job: str | None, reason: str = "", until: str | None = None,
              on_resume: str = "skip") -> Pause:
        """Pause ``job`` (None: every job) with a reason, an end (ISO time or duration) and an on-resume policy."""
        now = self.state.clock.now()
        try:
            ends = iso(resume.parse_until(until, now)) if until else None
            policy = resume.parse_on_resume(on_resume)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        if job is not None:
            before, after = self.state.pauses.pause(job, actor, reason, ends, policy)
            self.audit(actor, "job.pause", job, reason, before.to_json() if before else None, after.to_json())
            return after
        after = self.state.pauses.pause_all(actor, reason, ends, policy)
        kept = after.by != actor or after.reason != reason or after.until != ends
        self.audit(actor, "scheduler.pause-all", "*", reason, after.to_json() if kept else None, after.to_json(),
                   "a pause-all was in force already: kept" if kept else "")
        return after

    def resume(self, actor: str, job: str | None) -> tuple[Pause | None, dict[str, str]]:
        """End ``job``'s pause (None: the pause-all); its on-resume policy queues the slots it runs. Returns the
        pause ended and job -> backfill id of those queued."""
        ended = self.state.pauses.resume(job, actor) if job else self.state.pauses.resume_all(actor)
        return ended, self._ended(actor, job, ended, "job.resume" if job else "scheduler.resume-all")

    def end_at_until(self, actor: str, job: str | None, pause: Pause) -> bool:
        """A pause whose ``until`` came: ended by exactly one of the replicas that reach it (the one whose
        compare-and-delete wins), which applies its policy and writes its audit row."""
        if not self.state.pauses.end_if(job, pause):
            return False
        self._ended(actor, job, pause, "job.resume" if job else "scheduler.resume-all",
                    f"its pause ended at its end, {pause.until}")
        return True

    def _ended(self, actor: str, job: str | None, ended: Pause | None, action: str,
               reason: str | None = None) -> dict[str, str]:
        queued: dict[str, str] = {}
        if ended is not None and ended.on_resume != "skip":
            jobs = [job] if job else sorted(set(self.state.jobs.names()) - self.state.pauses.paused())
            try:
                with self.connect() as conn:
                    queued = resume.apply(conn, jobs, ended, actor, self.state.clock.now())
            except Exception as exc:  # noqa: BLE001 - resumed all the same; the slots held back stay paused
                self.warnings.append(f"the on-resume policy {ended.on_resume} was not applied ({type(exc).__name__}:"
                                     " PostgreSQL unavailable?): the slots held back stay paused")
            if queued:
                self.state.client.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "backfill"}))
        self.audit(actor, action, job or "*", reason, ended.to_json() if ended else None,
                   {"paused": False, "on_resume": ended.on_resume if ended else None, "backfills": queued},
                   "" if ended else "it was not paused")
        return queued

    # -- locks and dead letters -----------------------------------------------------------------------
    def clear_lock(self, actor: str, job: str, force: bool) -> LeaseView:
        lease = self.state.leases.clear(job, force=force)
        self.audit(actor, "lock.clear" + (".force" if force else ""), job, before=lease.to_json(),
                   detail=lease.holder)
        return lease

    def retry_dead_letter(self, actor: str, dead_id: str) -> str:
        letter = self.state.dead_letters.get(dead_id)
        trigger_id = self.state.dead_letters.retry(dead_id, by=actor)
        self.audit(actor, "dlq.retry", dead_id, before=letter.to_json(), after={"trigger_id": trigger_id},
                   detail=trigger_id)
        return trigger_id

    def drop_dead_letter(self, actor: str, dead_id: str) -> DeadLetter:
        letter = self.state.dead_letters.drop(dead_id)
        self.audit(actor, "dlq.drop", dead_id, before=letter.to_json(), detail=letter.job)
        return letter

    # -- backfills ------------------------------------------------------------------------------------
    def plan_backfill(self, job: str, since: str, until: str, only: str = "missing", max_parallel: int = 1,
                      force: bool = False) -> backfill.Plan:
        published = self.state.jobs.published(job)
        target = PlanJob(job, float(published.lock_ttl or 60), float(published.grace or published.period_seconds or 0),
                         parse_schedule(published.schedule or "1h", tz=published.timezone or "UTC"))
        low, high = parse_time(since, "--from"), parse_time(until, "--to")
        try:
            with self.connect() as conn:
                return backfill.plan(conn, target, low, high, only, max_parallel, skew=self.skew, force=force)
        except backfill.BackfillRefused as exc:
            raise Refused(str(exc)) from None

    def start_backfill(self, actor: str, plan: backfill.Plan, reason: str | None = None) -> str | None:
        """Store ``plan`` for the workers and wake them; None when it runs nothing."""
        if not plan.run:
            return None
        with self.connect() as conn:
            ident = backfill.create(conn, plan, actor, reason)
        self.state.client.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "backfill", "job": plan.job}))
        summary = {k: v for k, v in plan.to_json().items() if k not in ("will_run", "will_not_run")}
        self.audit(actor, "job.backfill", plan.job, reason, None, {**summary, "backfill": ident}, ident)
        return ident

    def backfill_progress(self, ident: str) -> backfill.Progress | None:
        with self.connect() as conn:
            return backfill.progress(conn, ident)
