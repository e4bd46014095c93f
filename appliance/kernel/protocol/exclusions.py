"""Which slots of a job its calendars excluded, as the audit judges them, from the versions of its spec.

Every version of a job's spec is stored (``job_specs``, migration 0007) when a worker starts with one its job
never had, and every run records the version it ran under (``job_runs.spec_version``). So a committed run is
judged by its own version's calendars, exactly. A slot recorded ``skipped_calendar`` carries no version: it is
accounted when any version of the job's spec (or its current settings) excludes it, since around a change old
and new workers run side by side and the version stored first need not be the one that reached the slot first.
For counting (``excluded`` in the report, and naming the calendar of a missing row) a slot takes the newest
version stored at or before it, or the current settings before the first.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from appliance.kernel.contract.policy import Policy
from appliance.kernel.schedule.calendars import Calendar, first_exclusion

Calendars = tuple[tuple[Calendar, ...], ZoneInfo]


class Exclusions:
    def __init__(self, current: Calendars, versions: list[tuple[int, datetime, Calendars]]):
        self.current = current
        self.starts = [at for _, at, _ in versions]
        self.in_order = [calendars for _, _, calendars in versions]
        self.by_version = {version: calendars for version, _, calendars in versions}

    @classmethod
    def read(cls, conn: psycopg.Connection, job: Any) -> Exclusions:
        """``job``'s current calendars (its ``policy``; none without one) and those of its stored versions."""
        policy = getattr(job, "policy", None)
        current = (policy.calendars if policy is not None else (), job.schedule.tz)
        versions = [(version, created, (Policy.from_json(spec.get("policy") or {}).calendars,
                                        ZoneInfo(spec["timezone"])))
                    for version, created, spec in conn.execute(
                        "SELECT version, created_at, spec FROM job_specs WHERE job = %s ORDER BY version",
                        (job.name,)).fetchall()]
        return cls(current, versions)

    @property
    def any(self) -> bool:
        """Whether any spec of the job has a calendar (else no slot needs looking at)."""
        return any(calendars for calendars, _ in [self.current, *self.in_order])

    def of(self, slot: datetime) -> tuple[str, str] | None:
        """(calendar, reason) under the version stored last at or before ``slot``; None when it runs."""
        index = bisect_right(self.starts, slot)
        return _first(self.in_order[index - 1] if index else self.current, slot)

    def under(self, version: int | None, slot: datetime) -> tuple[str, str] | None:
        """(calendar, reason) under spec ``version`` (a run's); by time when the run names none."""
        return _first(self.by_version[version], slot) if version in self.by_version else self.of(slot)

    def by_any(self, slot: datetime) -> bool:
        """Whether any version of the job's spec, or its current settings, excludes ``slot``."""
        return any(_first(calendars, slot) for calendars in [self.current, *self.in_order])


def _first(calendars: Calendars, slot: datetime) -> tuple[str, str] | None:
    return first_exclusion(calendars[0], slot, calendars[1]) if calendars[0] else None
