"""Calendars: the dates and windows on which a job's slots do not run, each with a name and a reason.

A calendar is made of any of:

- ``dates``: local dates (``2026-12-25``);
- ``holidays``: the public holidays of a country, optionally of one of its regions, from the ``holidays``
  library (``holidays = "IN"``, ``region = "MH"``), by local date;
- ``blackout``: windows, in the job's zone, each including its last minute or day, as a closed window is
  written (so ``Sat 00:00-Sun 23:59`` is the whole weekend): weekly (``Sat 00:00-Sun 23:59``), daily
  (``22:00-06:00``, overnight when the end is earlier), a date (``2026-12-25``), dates
  (``2026-12-24/2026-12-26``) or times (``2026-12-24T18:00/2026-12-27T06:00``);
- ``ics``: the events of an RFC 5545 file (read with ``icalendar``; ``RRULE``, ``RDATE`` and ``EXDATE`` are
  followed): an all-day event excludes its dates, a timed one its span (DTEND exclusive; its minute when it
  has no DTEND or DURATION).

A slot that falls on an excluded date or into an excluded window is not run: the worker records it
``skipped_calendar`` with the calendar's name and the reason (``public holiday in IN: Diwali``). Everything
here is a pure function of the slot's instant and the job's zone, so every replica, ``appliance schedule
plan`` and the audit agree on which slots are excluded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rruleset, rrulestr  # type: ignore[import-untyped]

from appliance.kernel.schedule.windows import parse_days

BLACKOUT_EXPECTED = ("a window like 'Sat 00:00-Sun 23:59', '22:00-06:00', '2026-12-25', '2026-12-24/2026-12-26' "
                     "or '2026-12-24T18:00/2026-12-27T06:00'")
_WEEKLY = re.compile(r"([a-z]+) (\d{1,2}):(\d{2}) ?- ?([a-z]+) (\d{1,2}):(\d{2})")
_DAILY = re.compile(r"(\d{1,2}):(\d{2}) ?- ?(\d{1,2}):(\d{2})")
_DATES = re.compile(r"(\d{4}-\d{2}-\d{2})(?:/(\d{4}-\d{2}-\d{2}))?")
_TIMES = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})/(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})")
_WEEK_MINUTES = 7 * 24 * 60
_MINUTE = timedelta(minutes=1)
_ZERO = timedelta(0)


class CalendarError(ValueError):
    """A calendar's definition is invalid; the message says what was expected."""


@dataclass(frozen=True)
class Blackout:
    """One blackout window as written; ``covers`` says whether a local wall time falls into it."""

    text: str
    kind: str  # weekly, daily, dates, times
    start: Any
    end: Any

    @classmethod
    def parse(cls, text: str) -> Blackout:
        norm = " ".join(str(text).lower().split())
        if match := _WEEKLY.fullmatch(norm):
            first, last = parse_days(match[1]), parse_days(match[4])
            if first is None or last is None or len(first) != 1 or len(last) != 1:
                raise CalendarError(f"unknown day in blackout {text!r}; expected {BLACKOUT_EXPECTED}")
            start = min(first) * 1440 + _minutes(match[2], match[3], text)
            end = min(last) * 1440 + _minutes(match[5], match[6], text)
            return cls(str(text), "weekly", start, end)
        if match := _DAILY.fullmatch(norm):
            return cls(str(text), "daily", _minutes(match[1], match[2], text), _minutes(match[3], match[4], text))
        if match := _TIMES.fullmatch(norm.upper()):
            start_t, end_t = datetime.fromisoformat(match[1]), datetime.fromisoformat(match[2])
            if end_t < start_t:
                raise CalendarError(f"blackout {text!r} ends before it starts")
            return cls(str(text), "times", start_t, end_t)
        if match := _DATES.fullmatch(norm):
            try:
                first_d = date.fromisoformat(match[1])
                last_d = date.fromisoformat(match[2]) if match[2] else first_d
            except ValueError:
                raise CalendarError(f"no such date in blackout {text!r}") from None
            if last_d < first_d:
                raise CalendarError(f"blackout {text!r} ends before it starts")
            return cls(str(text), "dates", first_d, last_d)
        raise CalendarError(f"unreadable blackout {text!r}; expected {BLACKOUT_EXPECTED}")

    def reopens_on(self, day: date) -> tuple[time, ...]:
        """The wall times on ``day`` at which this window ends (the minute after its last one), for a search of
        the next instant a calendar allows: outside ``covers``, those and the starts of what one looks for are the
        only candidates. A window that ends at midnight reopens at 00:00 of the next day."""
        if self.kind == "dates":
            return (time(),) if day == self.end + timedelta(days=1) else ()
        if self.kind == "times":
            after = self.end + _MINUTE
            return (after.time(),) if after.date() == day else ()
        end = self.end + 1
        if self.kind == "daily":
            return (time((end % 1440) // 60, end % 60),)
        if (end // 1440) % 7 == day.weekday():
            return (time((end % 1440) // 60, end % 60),)
        return ()

    def covers(self, wall: datetime) -> bool:
        """Whether the naive local ``wall`` time falls into the window (its last minute or day included)."""
        if self.kind == "dates":
            return bool(self.start <= wall.date() <= self.end)
        if self.kind == "times":
            return bool(self.start <= wall < self.end + _MINUTE)
        minute = wall.hour * 60 + wall.minute
        if self.kind == "daily":
            return _within(minute, self.start, self.end, 1440)
        return _within(wall.weekday() * 1440 + minute, self.start, self.end, _WEEK_MINUTES)


def _within(x: int, start: int, end: int, cycle: int) -> bool:
    """``x`` within ``start``..``end`` inclusive on a cycle of ``cycle`` minutes (wrapping when end < start)."""
    return start <= x <= end if start <= end else (x >= start or x <= end)


def _minutes(hh: str, mm: str, text: str) -> int:
    if int(hh) > 23 or int(mm) > 59:
        raise CalendarError(f"{hh}:{mm} in blackout {text!r} is not a time of day; expected 00:00-23:59")
    return int(hh) * 60 + int(mm)


@dataclass(frozen=True)
class _Event:
    summary: str
    rules: rruleset | None
    start: datetime | date
    span: timedelta
    all_day: bool


def _naive(value: datetime | date, zone: ZoneInfo) -> datetime | date:
    """An event time in the job's zone as a naive wall time (dates stay dates; floating times are local)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(zone).replace(tzinfo=None)
        return value
    return value


def parse_ics(text: str, where: str) -> tuple[_Event, ...]:
    """The events of an RFC 5545 document; raises ``CalendarError`` naming ``where`` when it is not one."""
    try:
        from icalendar import Calendar as IcsFile  # loaded only where an .ics calendar is used (8 MiB)

        document = IcsFile.from_ical(text)
    except (ValueError, KeyError, IndexError) as exc:
        raise CalendarError(f"{where} is not an RFC 5545 calendar ({exc})") from None
    events = []
    for component in document.walk("VEVENT"):
        start = component.decoded("DTSTART", None)
        if start is None:
            continue
        all_day = not isinstance(start, datetime)
        if "DTEND" in component:
            span = component.decoded("DTEND") - start
        elif "DURATION" in component:
            span = component.decoded("DURATION")
        else:
            span = timedelta(days=1) if all_day else timedelta(0)
        rules = _rules(component, start) if ("RRULE" in component or "RDATE" in component) else None
        events.append(_Event(str(component.get("SUMMARY", "event")), rules, start, span, all_day))
    return tuple(events)


def _rules(component: Any, start: datetime | date) -> rruleset:
    """The occurrences of a recurring event (RRULE, RDATE, EXDATE), on naive times of its own zone."""
    first = start if isinstance(start, datetime) else datetime.combine(start, time())
    first = first.replace(tzinfo=None)
    lines = [component["RRULE"].to_ical().decode()] if "RRULE" in component else []
    text = "\n".join(f"RRULE:{line}" for line in lines)
    found = rrulestr(text, dtstart=first, forceset=True, ignoretz=True) if text else rruleset()
    found.rdate(first)
    for key, add in (("RDATE", found.rdate), ("EXDATE", found.exdate)):
        values = component.get(key)
        for prop in values if isinstance(values, list) else [values] if values is not None else []:
            for item in prop.dts:
                dt = item.dt if isinstance(item.dt, datetime) else datetime.combine(item.dt, time())
                add(dt.replace(tzinfo=None))
    return found


def _ics_reason(events: tuple[_Event, ...], wall: datetime, zone: ZoneInfo) -> str | None:
    for event in events:
        start = _naive(event.start, zone)
        if event.all_day:
            begin = datetime.combine(start if isinstance(start, date) else start.date(), time())
        else:
            begin = start if isinstance(start, datetime) else datetime.combine(start, time())
        if event.rules is None:
            occurrence: datetime | None = begin
        elif not event.all_day and isinstance(event.start, datetime) and event.start.tzinfo is not None:
            # Recurrences keep the event's own wall time: look for the one before the slot on that clock (the
            # job's wall time would be hours off it), then place it in the job's zone.
            own = event.start.tzinfo
            occurrence = event.rules.before(wall.replace(tzinfo=zone).astimezone(own).replace(tzinfo=None), inc=True)
            if occurrence is not None:
                occurrence = occurrence.replace(tzinfo=own).astimezone(zone).replace(tzinfo=None)
        else:
            occurrence = event.rules.before(wall, inc=True)
        # DTEND is exclusive (RFC 5545): an event covers its span; one without a span covers its minute.
        if occurrence is not None and occurrence <= wall < occurrence + (event.span if event.span > _ZERO else _MINUTE):
            return event.summary
    return None


@lru_cache(maxsize=256)
def _holidays(country: str, region: str | None, year: int) -> dict[date, str]:
    return dict(_library().country_holidays(country, subdiv=region, years=year).items())


def _library() -> ModuleType:
    """The ``holidays`` library, loaded only where a calendar names a country."""
    import holidays

    return holidays


def check_holidays(country: str, region: str | None) -> None:
    """Raise ``CalendarError`` unless the ``holidays`` library knows the country (and region)."""
    try:
        _library().country_holidays(country, subdiv=region, years=2026)
    except NotImplementedError as exc:
        raise CalendarError(f"unknown country or region for holidays: {exc}") from None


@dataclass(frozen=True)
class Calendar:
    """A named calendar of exclusions; ``excluded`` gives the reason a slot does not run, or None."""

    name: str
    dates: frozenset[date] = frozenset()
    holidays: str | None = None
    region: str | None = None
    blackouts: tuple[Blackout, ...] = ()
    ics: str | None = None  # the RFC 5545 text, kept whole so a stored spec reproduces its plan
    ics_source: str | None = None
    events: tuple[_Event, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.ics and not self.events:
            object.__setattr__(self, "events", parse_ics(self.ics, self.ics_source or f"calendar {self.name}"))

    def excluded(self, slot: datetime, zone: ZoneInfo) -> str | None:
        """Why ``slot`` (aware) does not run under this calendar, read in ``zone``; None when it runs."""
        wall = slot.astimezone(zone).replace(tzinfo=None)
        day = wall.date()
        if day in self.dates:
            return f"excluded date {day.isoformat()}"
        if self.holidays:
            name = _holidays(self.holidays, self.region, day.year).get(day)
            if name:
                where = self.holidays + (f"-{self.region}" if self.region else "")
                return f"public holiday in {where}: {name}"
        for blackout in self.blackouts:
            if blackout.covers(wall):
                return f"blackout {blackout.text}"
        if self.events:
            summary = _ics_reason(self.events, wall, zone)
            if summary:
                return f"calendar event: {summary}"
        return None

    def reopens_on(self, day: date) -> tuple[time, ...]:
        """The wall times on ``day`` at which one of this calendar's blackout windows ends (sorted), and 00:00
        when the day before was an excluded date or a public holiday; an ``.ics`` event's end is not among them."""
        found = {t for blackout in self.blackouts for t in blackout.reopens_on(day)}
        before = day - timedelta(days=1)
        if before in self.dates or (self.holidays and before in _holidays(self.holidays, self.region, before.year)):
            found.add(time())
        return tuple(sorted(found))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dates": sorted(d.isoformat() for d in self.dates), "holidays": self.holidays,
                "region": self.region, "blackout": [b.text for b in self.blackouts], "ics": self.ics,
                "ics_source": self.ics_source}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calendar:
        return cls(name=data["name"], dates=frozenset(date.fromisoformat(d) for d in data.get("dates") or ()),
                   holidays=data.get("holidays"), region=data.get("region"),
                   blackouts=tuple(Blackout.parse(b) for b in data.get("blackout") or ()), ics=data.get("ics"),
                   ics_source=data.get("ics_source"))


def first_exclusion(calendars: tuple[Calendar, ...], slot: datetime, zone: ZoneInfo) -> tuple[str, str] | None:
    """The first calendar that excludes ``slot`` and its reason: (name, reason); None when the slot runs."""
    for calendar in calendars:
        reason = calendar.excluded(slot, zone)
        if reason:
            return calendar.name, reason
    return None


def make_calendar(name: str, dates: Iterable[date] = (), holidays: str | None = None,
                  blackout: Iterable[str] = ()) -> Calendar:
    """A calendar from plain values, as a pack keeps them in its own tables: local ``dates``, ``holidays`` a
    country or country-region (``IN``, ``DE-BY``) of the ``holidays`` library, ``blackout`` windows as written
    in a jobs file. Raises ``CalendarError`` naming the value it cannot read."""
    country, region = None, None
    if holidays:
        country, _, own = str(holidays).strip().upper().partition("-")
        region = own or None
        check_holidays(country, region)
    return Calendar(name, frozenset(dates), country, region, tuple(Blackout.parse(text) for text in blackout))
