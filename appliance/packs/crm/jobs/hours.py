"""A tenant's business hours: weekly opening intervals in local wall time, a time zone, and the tenant's
holidays as a calendar of the appliance's (``appliance.sdk.Calendar``, the mechanism jobs' ``calendar`` key
uses): its own dates, the public holidays of a country or region (the ``holidays`` library: ``IN``, ``DE-BY``),
and blackout windows (``Sat 00:00-Sun 23:59``, ``12:00-12:59``, ``2026-12-24/2026-12-26``). The tenant is
closed whenever the calendar excludes the time, and its next opening is found past the calendar's exclusions.

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

from appliance.sdk import Calendar, CalendarError, first_exclusion, make_calendar

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: How far ``next_opening`` looks ahead: a year and a bit covers a tenant closed for every holiday of a year.
HORIZON_DAYS = 400
_INTERVAL = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Interval = tuple[int, int]  # minutes after local midnight: [start, end)


@dataclass(frozen=True)
class BusinessHours:
    zone: ZoneInfo
    week: tuple[tuple[Interval, ...], ...]  # index 0 is Monday
    closed: Calendar

    @classmethod
    def parse(cls, zone: str, hours: Mapping[str, Iterable[str]] | None, holidays: Iterable[date] = (),
              country: str | None = None, blackouts: Iterable[str] = ()) -> BusinessHours:
        """Build from a tenant row: ``zone`` an IANA name, ``hours`` like ``{"mon": ["09:00-12:00",
        "13:00-18:00"]}`` (missing days are closed; ``24:00`` ends a day), ``holidays`` local dates, ``country``
        whose public holidays close the tenant (``IN``, ``DE-BY``), ``blackouts`` windows in local time.

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
        try:
            closed = make_calendar("tenant", holidays, country, blackouts)
        except CalendarError as exc:
            raise ValueError(f"bad holidays of the tenant: {exc}") from None
        return cls(tz, week, closed)

    def closed_because(self, at: datetime) -> str | None:
        """Why the tenant's calendar closes it at ``at`` (an excluded date, a public holiday, a blackout), or None."""
        found = first_exclusion((self.closed,), at, self.zone)
        return found[1] if found else None

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        if self.closed_because(at):
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
            # An opening, or the end of a calendar window inside an opening interval.
            starts = {time(start // 60, start % 60) for start, _end in self.week[day.weekday()]}
            for wall_time in sorted(starts | set(self.closed.reopens_on(day))):
                candidate = datetime.combine(day, wall_time, tzinfo=self.zone).astimezone(UTC)
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
