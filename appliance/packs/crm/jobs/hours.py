"""A tenant's business hours: weekly opening intervals in local wall time, holidays, and a time zone.

Pure functions of time: ``is_open(at)`` and ``next_opening(at)`` take aware datetimes and return UTC ones.
Wall-clock intervals follow the zone's DST changes (09:00 in New York is 14:00 UTC in winter and 13:00 UTC in
summer). An opening time inside the hour a spring DST change skips is taken with the offset from before the
change (02:30 on that day opens at 03:30 the new local time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: How far ``next_opening`` looks ahead: a year and a bit covers a tenant closed for every holiday of a year.
HORIZON_DAYS = 400
_INTERVAL = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Interval = tuple[int, int]  # minutes after local midnight: [start, end)


@dataclass(frozen=True)
class BusinessHours:
    zone: ZoneInfo
    week: tuple[tuple[Interval, ...], ...]  # index 0 is Monday
    holidays: frozenset[date]

    @classmethod
    def parse(cls, zone: str, hours: Mapping[str, Iterable[str]] | None,
              holidays: Iterable[date] = ()) -> BusinessHours:
        """Build from a tenant row: ``zone`` an IANA name, ``hours`` like ``{"mon": ["09:00-12:00",
        "13:00-18:00"]}`` (missing days are closed; ``24:00`` ends a day), ``holidays`` local dates.

        Raises ``ValueError`` naming the bad part.
        """
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        if not isinstance(hours, Mapping):
            raise ValueError("business hours must map weekdays (mon..sun) to lists of 'HH:MM-HH:MM'")
        unknown = sorted(set(hours) - set(WEEKDAYS))
        if unknown:
            raise ValueError(f"unknown weekday {unknown[0]!r} in business hours (expected mon..sun)")
        week = tuple(tuple(sorted(_interval(day, text) for text in hours.get(day) or ())) for day in WEEKDAYS)
        return cls(tz, week, frozenset(holidays))

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        if local.date() in self.holidays:
            return False
        minute = local.hour * 60 + local.minute + local.second / 60
        return any(start <= minute < end for start, end in self.week[local.weekday()])

    def next_opening(self, at: datetime) -> datetime | None:
        """``at`` (in UTC) when open then; else the next time the tenant opens; None if it never opens within
        ``HORIZON_DAYS``."""
        if self.is_open(at):
            return at.astimezone(UTC)
        first = at.astimezone(self.zone).date()
        for offset in range(HORIZON_DAYS):
            day = first + timedelta(days=offset)
            if day in self.holidays:
                continue
            for start, _end in self.week[day.weekday()]:
                wall = datetime.combine(day, time(start // 60, start % 60), tzinfo=self.zone)
                candidate = wall.astimezone(UTC)
                if candidate > at and self.is_open(candidate):
                    return candidate
        return None


def _interval(day: str, text: object) -> Interval:
    match = _INTERVAL.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"bad business hours {text!r} on {day} (expected 'HH:MM-HH:MM')")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60 or start >= end:
        raise ValueError(f"bad business hours {text!r} on {day} (start before end, within 00:00-24:00)")
    return start, end
