"""Runs due on the same instant start before any of them does its bookkeeping.

When several jobs are due on the same second (every minute, every hour at :00), their threads wake together
and need the GIL one after the other. A short run that ends first would otherwise spend the GIL on its ledger
record, history JSON and log lines while the others still wait to start: the last one's lag is everyone
else's bookkeeping. Here a run that has ended waits until every run claimed for its instant has started, at
most ``SETTLE`` seconds, or ``SETTLE_PER_RUN`` for each run of the instant when that is longer (a herd of
hundreds takes longer than 50 ms to start on a busy machine), never more than ``SETTLE_MAX``.

A start costs no lock (a herd's threads all start within milliseconds; one holding a lock when the GIL switches
away would keep the others waiting for it): only the last start of an instant takes one, to wake the runs that
have ended meanwhile.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import datetime

SETTLE = 0.05
SETTLE_PER_RUN = 0.0005
SETTLE_MAX = 0.3


class StartTogether:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._claimed: Counter[datetime] = Counter()
        self._starts: dict[datetime, itertools.count[int]] = {}

    def claimed(self, instant: datetime) -> None:
        with self._cond:
            self._claimed[instant] += 1
            self._starts.setdefault(instant, itertools.count(1))

    def started(self, instant: datetime) -> None:
        starts = self._starts.get(instant)
        if starts is None:
            return
        if next(starts) < self._claimed.get(instant, 0):  # next() of a count is atomic: no lock
            return
        with self._cond:  # the last start of the instant
            if self._starts.get(instant) is starts:
                del self._starts[instant]
                self._claimed.pop(instant, None)
            self._cond.notify_all()

    def settle(self, instant: datetime, timeout: float | None = None) -> None:
        with self._cond:
            if timeout is None:
                timeout = min(SETTLE_MAX, max(SETTLE, SETTLE_PER_RUN * self._claimed.get(instant, 0)))
            self._cond.wait_for(lambda: instant not in self._claimed, timeout)
