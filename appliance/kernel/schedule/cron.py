"""Cron expressions through croniter, evaluated on naive local wall-clock time.

Five fields (minute hour day month weekday) or six with the seconds FIRST, as in node-cron
(``*/30 * * * * *`` fires every 30 seconds). croniter only ever sees naive wall times, so its own time
zone handling plays no part: ``appliance.kernel.schedule.model`` maps wall times to instants with the project's DST
rules.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta

from croniter import croniter
from croniter.croniter import CroniterBadDateError

from appliance.errors import ScheduleError

CRON_EXPECTED = "5 fields (minute hour day month weekday) or 6 with the seconds first"
_FIELD = re.compile(r"[0-9a-z*/,?#-]+", re.IGNORECASE)
# croniter's R (random) and H (hashed) values would give each replica different slots.
_RANDOM_OR_HASHED = re.compile(r"(?:^|[,/-])[rh](?:$|[,/-])", re.IGNORECASE)
_US = timedelta(microseconds=1)
_REFERENCE = datetime(2024, 1, 1)


def looks_like_cron(text: str) -> bool:
    """True for three or more cron-like fields: the text is then judged (and reported) as cron."""
    fields = text.split()
    return len(fields) >= 3 and all(_FIELD.fullmatch(f) for f in fields)


class CronGrid:
    """The wall times matched by one cron expression; safe to share between threads."""

    def __init__(self, expr: str):
        fields = expr.split()
        if len(fields) not in (5, 6):
            raise ScheduleError(f"a cron expression has {CRON_EXPECTED}, not {len(fields)} fields")
        if any(_RANDOM_OR_HASHED.search(f) for f in fields):
            raise ScheduleError("random (R) and hashed (H) cron values are not supported")
        self.expr = " ".join(fields)
        self.seconds = len(fields) == 6
        hour = fields[2] if self.seconds else fields[1]
        self.every_hour = hour.startswith("*")
        try:
            self._iter = croniter(self.expr, _REFERENCE, ret_type=datetime, second_at_beginning=self.seconds)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ScheduleError(f"{exc}; expected {CRON_EXPECTED}") from None
        # croniter keeps its position in the object, so each query holds the lock.
        self._lock = threading.Lock()

    def after(self, n: datetime) -> datetime:
        """The first matching wall time strictly after the naive ``n``."""
        with self._lock:
            try:
                return self._iter.get_next(datetime, start_time=n)
            except CroniterBadDateError:
                raise ScheduleError(f"the cron expression {self.expr!r} never fires") from None

    def at_or_before(self, n: datetime) -> datetime | None:
        """The last matching wall time at or before the naive ``n``; None when croniter finds none."""
        with self._lock:
            try:
                return self._iter.get_prev(datetime, start_time=n + _US)
            except CroniterBadDateError:
                return None
