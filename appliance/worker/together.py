"""Runs due on the same instant start before any of them does its bookkeeping.

When several jobs are due on the same second (every minute, every hour at :00), their threads wake together
and need the GIL one after the other. A short run that ends first would otherwise spend the GIL on its ledger
record, history JSON and log lines while the others still wait to start: the last one's lag is everyone
else's bookkeeping. Here a run that has ended waits (at most ``SETTLE`` seconds) until every run claimed for
its instant has started.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime

SETTLE = 0.05


class StartTogether:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: Counter[datetime] = Counter()

    def claimed(self, instant: datetime) -> None:
        with self._cond:
            self._waiting[instant] += 1

    def started(self, instant: datetime) -> None:
        with self._cond:
            self._waiting[instant] -= 1
            if self._waiting[instant] <= 0:
                del self._waiting[instant]
                self._cond.notify_all()

    def settle(self, instant: datetime, timeout: float = SETTLE) -> None:
        with self._cond:
            self._cond.wait_for(lambda: instant not in self._waiting, timeout)
