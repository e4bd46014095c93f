"""The future of a schedule as the worker will run it: each slot in the job's zone and in UTC, its start with
the jitter applied, the calendar that excludes it (and why), and where it meets a DST change; and the fire times
one version of a job's spec adds or removes against another (``appliance schedule plan`` / ``diff``,
``GET /api/jobs/NAME/plan``).

Pure functions of their arguments: the worker, the CLI and the sidecar compute the same plan from the same spec.
``MAX_STARTS_PER_SECOND`` is not applied here: it spreads the starts the whole fleet has due on one instant,
which only the cluster knows when the instant comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.kernel.schedule.calendars import Calendar, first_exclusion
from appliance.kernel.schedule.jitter import planned_start
from appliance.kernel.schedule.model import Schedule

_US = timedelta(microseconds=1)
#: At most this many slots are listed or compared (a 1 s job over 30 days is 2.6 million).
PLAN_LIMIT = 100_000


@dataclass(frozen=True)
class PlannedSlot:
    """One slot: ``slot`` its nominal instant (the ledger's key), ``start`` when its run starts (jitter applied),
    both aware; ``excluded`` (calendar, reason) when it does not run; ``dst`` a note where a DST change
    moved or repeated its wall time."""

    slot: datetime
    start: datetime
    local: datetime
    excluded: tuple[str, str] | None
    dst: str | None

    def to_json(self) -> dict[str, Any]:
        return {"slot": _iso(self.slot), "local": self.local.isoformat(), "start": _iso(self.start),
                "start_local": self.start.astimezone(self.local.tzinfo).isoformat(),
                "runs": self.excluded is None,
                "calendar": self.excluded[0] if self.excluded else None,
                "reason": self.excluded[1] if self.excluded else None, "dst": self.dst}


def _iso(dt: datetime) -> str:
    """ISO 8601 UTC with a Z, to the millisecond when a jitter made one."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds" if dt.microsecond else "seconds").replace("+00:00", "Z")


def dst_note(schedule: Schedule, slot: datetime) -> str | None:
    """``gap`` when the slot is the first instant after a spring-forward (a wall time in the gap runs there),
    ``fold`` when its wall time occurs twice (autumn), naming the pass; None otherwise."""
    zone = schedule.tz
    local = slot.astimezone(zone)
    before = (slot - _US).astimezone(zone)
    if before.utcoffset() != local.utcoffset() and (local.utcoffset() or timedelta(0)) > (before.utcoffset() or
                                                                                      timedelta(0)):
        return (f"DST gap: the clock jumps from {(before + _US).strftime('%H:%M')} to {local.strftime('%H:%M')}; "
                "a wall time in the gap runs here")
    other = local.replace(fold=1 - local.fold)
    if other.utcoffset() != local.utcoffset():
        which = "second" if local.fold else "first"
        return f"DST fold: {local.strftime('%H:%M')} occurs twice; this is its {which} pass"
    return None


def plan(job: str, schedule: Schedule, jitter: float, calendars: tuple[Calendar, ...], after: datetime,
         count: int) -> list[PlannedSlot]:
    """The next ``count`` slots strictly after ``after`` (aware), excluded ones included and marked."""
    found = []
    t = after
    for _ in range(min(count, PLAN_LIMIT)):
        t = schedule.next_after(t)
        found.append(_planned(job, schedule, jitter, calendars, t))
    return found


def _planned(job: str, schedule: Schedule, jitter: float, calendars: tuple[Calendar, ...],
             slot: datetime) -> PlannedSlot:
    return PlannedSlot(slot, planned_start(job, slot, jitter), slot.astimezone(schedule.tz),
                       first_exclusion(calendars, slot, schedule.tz) if calendars else None, dst_note(schedule, slot))


def fire_times(job: str, schedule: Schedule, jitter: float, calendars: tuple[Calendar, ...], after: datetime,
               until: datetime) -> dict[datetime, PlannedSlot]:
    """The slots in ``(after, until]`` that run (not excluded), by planned start."""
    found: dict[datetime, PlannedSlot] = {}
    t = schedule.next_after(after)
    while t <= until and len(found) < PLAN_LIMIT:
        planned = _planned(job, schedule, jitter, calendars, t)
        if planned.excluded is None:
            found[planned.start] = planned
        t = schedule.next_after(t)
    return found


def diff(old: dict[datetime, PlannedSlot], new: dict[datetime, PlannedSlot]) -> tuple[list[PlannedSlot],
                                                                                    list[PlannedSlot]]:
    """(added, removed): the fire times of ``new`` not in ``old``, and of ``old`` not in ``new``, in order."""
    added = [new[t] for t in sorted(set(new) - set(old))]
    removed = [old[t] for t in sorted(set(old) - set(new))]
    return added, removed


def plan_lines(slots: list[PlannedSlot]) -> list[str]:
    """The plan as ``appliance schedule plan`` prints it: one line per slot."""
    lines = [f"{'SLOT (LOCAL)':<25}  {'SLOT (UTC)':<20}  {'START (UTC)':<24}  NOTE"]
    for s in slots:
        notes = []
        if s.excluded:
            notes.append(f"skipped_calendar [{s.excluded[0]}] {s.excluded[1]}")
        if s.dst:
            notes.append(s.dst)
        lines.append(f"{s.local.isoformat():<25}  {_iso(s.slot):<20}  {_iso(s.start):<24}  {'; '.join(notes) or '-'}")
    return lines
