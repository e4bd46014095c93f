"""The schedule model: when each slot of a job falls, as pure functions of a given time ``t``.

Forms (case-insensitive):

- intervals ``30s``, ``5m``, ``1h``, ``2d`` (optionally ``every 30s``; ``sec``/``min``/``hours``/``days``
  also work);
- times ``02:00``, ``daily at 02:00``, ``mon 09:00``, ``mon,wed,fri 09:00``, ``weekdays 09:00``;
- cron with 5 fields, or 6 with the seconds first (``*/30 * * * * *``);
- windows ``every 1h between 08:00-20:00`` (the end excluded, as business hours are: 08:00 ... 19:00, 12 slots),
  ``every 30m between 09:00-17:30 weekdays``;
  an end before the start is an overnight window (``between 22:00-06:00``), which belongs to the day it
  starts on.

Slots never depend on when the process started or how long a run took. An interval that divides a day is
aligned to local midnight in the schedule's zone (``30s`` fires at :00 and :30, ``1h`` on the local hour);
other intervals (``7m``, ``2d``) are aligned to the Unix epoch in UTC. Everything else is wall-clock time in
the schedule's zone. Inside, times are aware UTC; the zone is used only to read and place wall times.

Daylight saving time:

- a wall time skipped by the spring-forward runs once, at the first valid instant after the gap (``02:30``
  in Europe/Berlin on the last Sunday of March runs at 03:00 local, 01:00 UTC);
- fixed times (times of day and week, cron whose hour field is not ``*``) run once in the repeated autumn
  hour, at its first occurrence;
- recurring forms follow real time through the repeated hour, in both passes: sub-daily intervals fire
  every 30s/5m/1h of elapsed time (an hourly job fires 23 times on the spring day and 25 on the autumn
  day), and so do windows and cron whose hour field starts with ``*`` (``*/5 * * * *``), as node-cron and
  Vixie cron do. Intervals longer than the shift (``2h`` … ``12h``) keep their local times, so one gap on a
  DST day is an hour shorter or longer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance.errors import ScheduleError
from appliance.kernel.schedule.cron import CronGrid, looks_like_cron
from appliance.kernel.schedule.windows import ALL_DAYS, DAYS_EXPECTED, DayGrid, describe_days, parse_days

__all__ = ["Schedule", "ScheduleError", "parse_schedule"]

EXPECTED = ("expected an interval like 30s/5m/1h, a time like 02:00 or 'mon 09:00', a 5- or 6-field cron "
            "expression, or 'every 1h between 08:00-20:00 [weekdays]'")
DAY = 86_400
MAX_INTERVAL_DAYS = 366
LOOKBACK = timedelta(days=400)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_SECOND_US = 1_000_000
_DAY_US = DAY * _SECOND_US
_UNIT = r"(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": DAY}
_CLOCK = r"(\d{1,2}):(\d{2})"
_INTERVAL = re.compile(rf"(?:every )?(-?\d+) ?{_UNIT}")
_TIME = re.compile(rf"(?:(?!at )([a-z,-]+) )?(?:at )?{_CLOCK}")
_WINDOW = re.compile(rf"every (-?\d+) ?{_UNIT} between {_CLOCK} ?- ?{_CLOCK}(?: (?:on )?([a-z,-]+))?")
_SAMPLE_START = datetime(2024, 1, 1)
_SAMPLE_SIZE = 32


class _Rule(Protocol):
    def next_after(self, x: int) -> int: ...
    def last_at_or_before(self, x: int) -> int | None: ...


class _Grid(Protocol):
    def after(self, n: datetime) -> datetime: ...
    def at_or_before(self, n: datetime) -> datetime | None: ...


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; build it with ``parse_schedule``. Every method takes the time it works from."""

    text: str
    tz: ZoneInfo
    period: timedelta
    rule: _Rule = field(compare=False, repr=False)
    summary: str = field(compare=False, repr=False)

    def next_after(self, t: datetime) -> datetime:
        """The first slot strictly after the aware ``t``, as an aware UTC datetime."""
        return _to_utc(self.rule.next_after(_to_us(t)))

    def next_runs(self, t: datetime, n: int) -> list[datetime]:
        """The next ``n`` slots strictly after the aware ``t`` (aware UTC)."""
        runs: list[datetime] = []
        for _ in range(n):
            t = self.next_after(t)
            runs.append(t)
        return runs

    def last_at_or_before(self, t: datetime) -> datetime | None:
        """The most recent slot at or before the aware ``t`` (aware UTC); None when there was none in the
        past 400 days."""
        x = _to_us(t)
        u = self.rule.last_at_or_before(x)
        if u is None or x - u > LOOKBACK // _US:
            return None
        return _to_utc(u)

    def describe(self) -> str:
        """Short human text, such as ``every 30s`` or ``daily at 02:00 (Europe/Paris)``."""
        return self.summary

    def __str__(self) -> str:
        return self.text


def parse_schedule(text: str, tz: str | ZoneInfo = "UTC") -> Schedule:
    """Parse ``text`` in the IANA zone ``tz``; raises ``ScheduleError`` naming the text and what was expected."""
    zone = _zone(tz)
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError(f"invalid schedule {text!r}: {EXPECTED}", EXPECTED)
    norm = re.sub(r" ?, ?", ",", " ".join(text.lower().split()))
    try:
        for parse in (_parse_interval, _parse_window, _parse_time):
            made = parse(norm, zone)
            if made is not None:
                return Schedule(text, zone, *made)
        if looks_like_cron(norm):
            return Schedule(text, zone, *_parse_cron(" ".join(text.split()), zone))
    except ScheduleError as exc:
        raise ScheduleError(f"invalid schedule {text!r}: {exc}", str(exc)) from None
    raise ScheduleError(f"invalid schedule {text!r}: {EXPECTED}", EXPECTED)


# -- parsing ---------------------------------------------------------------------------------------------

_Parsed = tuple[timedelta, _Rule, str]


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    if isinstance(tz, str) and tz.strip():
        try:
            return ZoneInfo(tz.strip())
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ScheduleError(f"unknown time zone {tz!r}; expected an IANA name like Europe/Paris")


def _seconds(number: str, unit: str) -> int:
    seconds = int(number) * _UNIT_SECONDS[unit[0]]
    if seconds <= 0:
        raise ScheduleError(f"the interval must be positive, like 30s/5m/1h, not {number}{unit}")
    if seconds > MAX_INTERVAL_DAYS * DAY:
        raise ScheduleError(f"the interval must be at most {MAX_INTERVAL_DAYS}d")
    return seconds


def _clock(hh: str, mm: str) -> int:
    if int(hh) > 23 or int(mm) > 59:
        raise ScheduleError(f"{hh}:{mm} is not a time of day; expected 00:00-23:59")
    return int(hh) * 3600 + int(mm) * 60


def _days(text: str) -> frozenset[int]:
    days = parse_days(text)
    if days is None:
        raise ScheduleError(f"unknown days {text!r}; expected {DAYS_EXPECTED}")
    return days


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}"


def _parse_interval(norm: str, zone: ZoneInfo) -> _Parsed | None:
    match = _INTERVAL.fullmatch(norm)
    if match is None:
        return None
    seconds = _seconds(*match.groups())
    summary = f"every {int(match[1])}{match[2][0]}"
    if seconds == DAY:
        # A day is local midnight as a wall time: zones whose clocks skip midnight still run daily.
        return timedelta(days=1), _WallRule(zone, DayGrid(0, DAY, 1, ALL_DAYS), both_passes=False), summary
    aligned = zone if DAY % seconds == 0 else None
    return timedelta(seconds=seconds), _IntervalRule(seconds, aligned), summary


def _parse_window(norm: str, zone: ZoneInfo) -> _Parsed | None:
    match = _WINDOW.fullmatch(norm)
    if match is None:
        return None
    step = _seconds(match[1], match[2])
    if step >= DAY:
        raise ScheduleError("the step of a window must be shorter than a day")
    start, end = _clock(match[3], match[4]), _clock(match[5], match[6])
    if start == end:
        raise ScheduleError("a window needs different start and end times")
    if end < start:
        end += DAY
    days = _days(match[7] or "daily")
    grid = DayGrid(start, step, (end - start - 1) // step + 1, days)  # slots before the end only
    on = "" if days == ALL_DAYS else f" on {describe_days(days)}"
    summary = f"every {int(match[1])}{match[2][0]} between {_hhmm(start)}-{_hhmm(end)}{on} ({zone.key})"
    return timedelta(seconds=step), _WallRule(zone, grid, both_passes=True), summary


def _parse_time(norm: str, zone: ZoneInfo) -> _Parsed | None:
    match = _TIME.fullmatch(norm)
    if match is None:
        return None
    days = _days(match[1] or "daily")
    at = _clock(match[2], match[3])
    grid = DayGrid(at, DAY, 1, days)
    summary = f"{describe_days(days)} at {_hhmm(at)} ({zone.key})"
    return _smallest_gap(grid), _WallRule(zone, grid, both_passes=False), summary


def _parse_cron(expr: str, zone: ZoneInfo) -> _Parsed:
    grid = CronGrid(expr)
    return _smallest_gap(grid), _WallRule(zone, grid, both_passes=grid.every_hour), f"cron {grid.expr} ({zone.key})"


def _smallest_gap(grid: _Grid) -> timedelta:
    """The smallest gap between consecutive wall times over a fixed sample (no DST: naive arithmetic)."""
    wall = grid.after(_SAMPLE_START)
    gaps = []
    for _ in range(_SAMPLE_SIZE):
        following = grid.after(wall)
        gaps.append(following - wall)
        wall = following
    return min(gaps)


# -- time arithmetic: instants are integer microseconds since the Unix epoch ----------------------------

def _to_us(t: datetime) -> int:
    if not isinstance(t, datetime) or t.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got {t!r}")
    return (t - _EPOCH) // _US


def _to_utc(u: int) -> datetime:
    return _EPOCH + timedelta(microseconds=u)


def _offset(zone: ZoneInfo, u: int) -> int:
    offset = _to_utc(u).astimezone(zone).utcoffset()  # never None: an aware time in a ZoneInfo
    return (offset or timedelta(0)) // _US


def _local(zone: ZoneInfo, u: int) -> datetime:
    return _to_utc(u).astimezone(zone)


def _wall(zone: ZoneInfo, u: int) -> datetime:
    return _local(zone, u).replace(tzinfo=None, fold=0)


def _instant(zone: ZoneInfo, wall: datetime, fold: int) -> int:
    return _to_us(wall.replace(tzinfo=zone, fold=fold))


def _bisect(zone: ZoneInfo, lo: int, hi: int) -> int:
    """The first instant in ``(lo, hi]`` whose offset differs from ``lo``'s, given that ``hi``'s does."""
    before = _offset(zone, lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(zone, mid) == before:
            lo = mid
        else:
            hi = mid
    return hi


def _first_transition(zone: ZoneInfo, lo: int, hi: int) -> int | None:
    """The first offset change in ``(lo, hi]``, or None; zones never change twice within a day."""
    before = _offset(zone, lo)
    while lo < hi:
        step_end = min(lo + _DAY_US, hi)
        if _offset(zone, step_end) != before:
            return _bisect(zone, lo, step_end)
        lo = step_end
    return None


# -- rules -----------------------------------------------------------------------------------------------

class _IntervalRule:
    """Slots where the local clock shows a multiple of ``seconds`` since midnight (``zone``), or multiples
    since the Unix epoch (``zone`` None). A multiple the spring-forward skips runs at the gap's end."""

    def __init__(self, seconds: int, zone: ZoneInfo | None):
        self.step = seconds * _SECOND_US
        self.zone = zone

    def _offset(self, u: int) -> int:
        return 0 if self.zone is None else _offset(self.zone, u)

    def _floor(self, u: int, offset: int) -> int:
        """The last grid instant at or before ``u`` while the zone's offset is ``offset``."""
        return (u + offset) // self.step * self.step - offset

    def next_after(self, x: int) -> int:
        offset = self._offset(x)
        candidate = self._floor(x, offset) + self.step
        after = self._offset(candidate)
        if after == offset:
            return candidate
        assert self.zone is not None
        change = _bisect(self.zone, x, candidate)
        if after > offset and candidate < change + after - offset:
            return change
        return self._floor(change - 1, after) + self.step

    def last_at_or_before(self, x: int) -> int | None:
        offset = self._offset(x)
        candidate = self._floor(x, offset)
        before = self._offset(candidate)
        if before == offset:
            return candidate
        assert self.zone is not None
        change = _bisect(self.zone, candidate, x)
        if offset > before and self._floor(change - 1, before) + self.step < change + offset - before:
            return change
        return self._floor(change - 1, before)


class _WallRule:
    """Slots at the wall times of ``grid`` in ``zone``.

    A wall time in a spring-forward gap runs once at the gap's end. One in the repeated autumn hour runs at
    its first occurrence, and also at its second when ``both_passes`` (recurring forms).
    """

    def __init__(self, zone: ZoneInfo, grid: _Grid, both_passes: bool):
        self.zone = zone
        self.grid = grid
        self.both_passes = both_passes

    def _instants(self, wall: datetime) -> list[int]:
        first, second = _instant(self.zone, wall, 0), _instant(self.zone, wall, 1)
        if first == second:
            return [first]
        if first < second:
            return [first, second] if self.both_passes else [first]
        # In a gap fold=1 reads the wall time with the later offset, which gives the earlier instant.
        return [_bisect(self.zone, second, first)]

    def next_after(self, x: int) -> int:
        wall = self.grid.after(_wall(self.zone, x))
        while not (later := [u for u in self._instants(wall) if u > x]):
            wall = self.grid.after(wall)
        best = later[0]
        if self.both_passes:
            best = min(best, self._second_pass_after(x, best))
        return best

    def last_at_or_before(self, x: int) -> int | None:
        wall = self.grid.at_or_before(_wall(self.zone, x))
        candidates = [] if wall is None else [u for u in self._instants(wall) if u <= x]
        if _local(self.zone, x).fold:
            candidates += self._first_pass_before(x)
        return max(candidates, default=None)

    def _second_pass_after(self, x: int, best: int) -> int:
        """The first second-pass slot of a repeated hour between ``x`` and ``best``; forward iteration over
        wall times cannot see it, as its wall time may be earlier than ``x``'s."""
        change = _first_transition(self.zone, x, best)
        if change is None:
            return best
        repeated = _offset(self.zone, x) - _offset(self.zone, change)
        if repeated <= 0:
            return best
        start = _wall(self.zone, change)
        wall = self.grid.after(start - _US)
        if wall >= start + timedelta(microseconds=repeated):
            return best
        return min(best, _instant(self.zone, wall, 1))

    def _first_pass_before(self, x: int) -> list[int]:
        """For ``x`` in the second pass of a repeated hour: the last first-pass slot (none or one), whose wall
        time may be later than ``x``'s."""
        change = _first_transition(self.zone, x - _DAY_US, x)
        if change is None:
            return []
        start = _wall(self.zone, change)
        end = start + timedelta(microseconds=_offset(self.zone, change - 1) - _offset(self.zone, change))
        wall = self.grid.at_or_before(end - _US)
        if wall is None or wall < start:
            return []
        return [_instant(self.zone, wall, 0)]
