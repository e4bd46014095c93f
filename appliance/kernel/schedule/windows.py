"""Day grids: wall-clock times repeated on chosen weekdays, for times of day, weekly times and windows.

A grid works on naive local wall-clock datetimes only; ``appliance.kernel.schedule.model`` maps its wall times to
instants in the schedule's zone (DST gaps and folds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ALL_DAYS = frozenset(range(7))
DAY_SETS = {"daily": ALL_DAYS, "weekdays": frozenset(range(5)), "weekends": frozenset({5, 6})}
DAYS_EXPECTED = "daily, weekdays, weekends or day names like mon,wed,fri or mon-fri"

_US = timedelta(microseconds=1)
_SECOND_US = 1_000_000


@dataclass(frozen=True)
class DayGrid:
    """Wall times ``start + k * step`` seconds after midnight, for ``0 <= k < count``, on ``days`` (0 = Monday).

    The last time may pass midnight: an overnight window belongs to the day it starts on. One day's times
    must end before the next day's begin (windows are shorter than a day), so times are ordered by day.
    """

    start: int
    step: int
    count: int
    days: frozenset[int]

    def after(self, n: datetime) -> datetime:
        """The first wall time strictly after the naive ``n``."""
        first_day = n.date() - timedelta(days=1)
        for i in range(9):
            day = first_day + timedelta(days=i)
            if day.weekday() in self.days:
                base = datetime.combine(day, time())
                k = max(0, self._index(base, n) + 1)
                if k < self.count:
                    return self._at(base, k)
        raise AssertionError("a non-empty set of days matches within a week")

    def at_or_before(self, n: datetime) -> datetime:
        """The last wall time at or before the naive ``n``."""
        for i in range(9):
            day = n.date() - timedelta(days=i)
            if day.weekday() in self.days:
                base = datetime.combine(day, time())
                k = min(self.count - 1, self._index(base, n))
                if k >= 0:
                    return self._at(base, k)
        raise AssertionError("a non-empty set of days matches within a week")

    def _index(self, base: datetime, n: datetime) -> int:
        """The ``k`` of the last time of ``base``'s day at or before ``n`` (negative before the first)."""
        elapsed = (n - base) // _US - self.start * _SECOND_US
        return elapsed // (self.step * _SECOND_US)

    def _at(self, base: datetime, k: int) -> datetime:
        return base + timedelta(seconds=self.start + k * self.step)


def parse_days(text: str) -> frozenset[int] | None:
    """``daily``, ``weekdays``, ``weekends`` or a comma list of day names and ranges (``mon-fri``,
    ``fri-mon`` wraps); None when ``text`` is none of these."""
    if text in DAY_SETS:
        return DAY_SETS[text]
    days: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        a, b = _day(first), _day(last) if dash else _day(first)
        if a is None or b is None:
            return None
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def describe_days(days: frozenset[int]) -> str:
    for name, members in DAY_SETS.items():
        if days == members:
            return name
    return ", ".join(DAY_NAMES[d].capitalize() for d in sorted(days))


def _day(name: str) -> int | None:
    for names in (DAY_NAMES, FULL_DAY_NAMES):
        if name in names:
            return names.index(name)
    return None
