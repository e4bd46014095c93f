"""The dead-man's switch: whether each job has succeeded recently enough, from what workers publish in Redis.

Shared by ``/health`` (a stale job makes it ``degraded``) and the worker's alerter (a warning when a job turns
stale, once per change). A job is stale when its last success is older than the slot ``factor`` periods back;
quiet hours of a windowed schedule do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from appliance.errors import ScheduleError
from appliance.kernel.protocol.state.jobs import JobView, PublishedJob
from appliance.kernel.protocol.state.workers import WorkerView
from appliance.kernel.runtime.json_object import JsonObject
from appliance.kernel.schedule.model import Schedule, parse_schedule


@dataclass(frozen=True)
class Freshness:
    """One job's dead-man's switch: ``status`` is ``fresh``, ``stale``, ``paused``, ``disabled`` or ``unknown``;
    the last success (ISO 8601 UTC) and its age, the job's period and how long it may go without a success
    (seconds)."""

    status: str
    last_success: str | None
    period_seconds: float
    allowed_seconds: float
    age_seconds: float | None

    def to_json(self) -> JsonObject:
        return {"last_success": self.last_success, "period_seconds": self.period_seconds,
                "allowed_seconds": self.allowed_seconds, "age_seconds": self.age_seconds, "status": self.status}


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@lru_cache(maxsize=256)
def _schedule(text: str, tz: str) -> Schedule:
    return parse_schedule(text, tz=tz)


def due_since(job: PublishedJob, now: float, factor: float) -> float:
    """The slot a job must have succeeded at or after to be fresh: the last slot at or before ``now`` minus
    ``factor`` periods, so quiet hours of a windowed schedule (hourly 08:00-20:00) do not make it stale."""
    period = float(job.period_seconds or 0)
    cutoff = now - factor * period
    if job.schedule is None:
        return cutoff
    try:
        schedule = _schedule(job.schedule, job.timezone or "UTC")
        slot = schedule.last_at_or_before(datetime.fromtimestamp(cutoff, UTC))
    except (TypeError, ValueError, ScheduleError):
        return cutoff
    return slot.timestamp() if slot is not None else cutoff


def freshness(jobs: Sequence[JobView], workers: Sequence[WorkerView], now: float,
              factor: float) -> dict[str, Freshness]:
    """Dead-man's switch per job, by name.

    A job that never succeeded is measured from the start of the oldest live worker that runs it; with no
    such worker its freshness is ``unknown`` (the worker component already reports the missing heartbeat).
    """
    result = {}
    for job in jobs:
        name, published = job.name, job.published
        period = float(published.period_seconds or 0)
        last = _epoch(job.last_success)
        if not published.enabled:
            status = "disabled"
        elif job.paused:
            status = "paused"
        else:
            starts = [_epoch(w.beat.started) for w in workers if name in w.beat.jobs]
            reference = last if last is not None else min((s for s in starts if s is not None), default=None)
            if reference is None or period <= 0:
                status = "unknown"
            else:
                status = "stale" if reference < due_since(published, now, factor) else "fresh"
        result[name] = Freshness(status, job.last_success, period, round(factor * period, 3),
                                 None if last is None else round(now - last, 3))
    return result
