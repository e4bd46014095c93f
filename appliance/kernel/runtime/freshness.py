"""The dead-man's switch: whether each job has succeeded recently enough, from what workers publish in Redis.

Shared by ``/health`` (a stale job makes it ``degraded``) and the worker's alerter (a warning when a job turns
stale, once per change). A job is stale when its last success is older than the slot ``factor`` periods back;
quiet hours of a windowed schedule do not count.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from appliance.errors import ScheduleError
from appliance.kernel.schedule.model import Schedule, parse_schedule


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


def due_since(job: dict[str, Any], now: float, factor: float) -> float:
    """The slot a job must have succeeded at or after to be fresh: the last slot at or before ``now`` minus
    ``factor`` periods, so quiet hours of a windowed schedule (hourly 08:00-20:00) do not make it stale."""
    period = float(job.get("period_seconds") or 0)
    cutoff = now - factor * period
    try:
        schedule = _schedule(job["schedule"], job.get("timezone") or "UTC")
        slot = schedule.last_at_or_before(datetime.fromtimestamp(cutoff, UTC))
    except (KeyError, TypeError, ValueError, ScheduleError):
        return cutoff
    return slot.timestamp() if slot is not None else cutoff


def freshness(jobs: list[dict[str, Any]], workers: list[dict[str, Any]], now: float,
              factor: float) -> dict[str, dict[str, Any]]:
    """Dead-man's switch per job: ``fresh``, ``stale``, ``paused``, ``disabled`` or ``unknown``.

    A job that never succeeded is measured from the start of the oldest live worker that runs it; with no
    such worker its freshness is ``unknown`` (the worker component already reports the missing heartbeat).
    """
    result = {}
    for job in jobs:
        name = job["name"]
        period = float(job.get("period_seconds") or 0)
        last = _epoch(job.get("last_success"))
        entry: dict[str, Any] = {"last_success": job.get("last_success"), "period_seconds": period,
                                 "allowed_seconds": round(factor * period, 3),
                                 "age_seconds": None if last is None else round(now - last, 3)}
        if not job.get("enabled", True):
            entry["status"] = "disabled"
        elif job.get("paused"):
            entry["status"] = "paused"
        else:
            starts = [_epoch(w.get("started")) for w in workers if name in (w.get("jobs") or [])]
            reference = last if last is not None else min((s for s in starts if s is not None), default=None)
            if reference is None or period <= 0:
                entry["status"] = "unknown"
            else:
                entry["status"] = "stale" if reference < due_since(job, now, factor) else "fresh"
        result[name] = entry
    return result
