"""The one clock: wall time, monotonic time and waiting, injected so tests step time instead of sleeping.

Code that reads the time or waits takes a ``Clock`` (default ``SYSTEM``) and never calls ``time.time()``,
``time.monotonic()``, ``datetime.now()`` or ``time.sleep()`` itself. Tests pass a ``SteppedClock`` and move
it with ``advance()``: a thread waiting on it wakes when the clock passes its deadline, not when real time
does, so a test of a 30 s TTL takes milliseconds and cannot lose a race against a busy machine.
"""

from __future__ import annotations

import threading
import time as _time
from datetime import UTC, datetime, timedelta
from typing import Protocol

# How often a stepped wait looks at the thing it waits on. Only its reaction to ``set()``/``notify()``
# from another thread is this late; its reaction to ``advance()`` is immediate.
_POLL = 0.005


class Waitable(Protocol):
    """``threading.Event`` or a held ``threading.Condition``: ``wait(timeout)`` is True when woken."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall time as an aware UTC datetime."""

    def time(self) -> float:
        """The wall time in seconds since the epoch (what Redis scores and Prometheus gauges hold)."""

    def monotonic(self) -> float:
        """Seconds that only grow, for deadlines and ages within one process."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` of this clock's time."""

    def wait(self, waitable: Waitable, timeout: float | None) -> bool:
        """``waitable.wait(timeout)`` with the timeout in this clock's time; True if woken before it."""


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            _time.sleep(seconds)

    def wait(self, waitable: Waitable, timeout: float | None) -> bool:
        return bool(waitable.wait(None if timeout is None else max(0.0, timeout)))


SYSTEM = SystemClock()


class SteppedClock:
    """A clock that moves only when a test calls ``advance()`` (or ``set()``).

    ``sleep`` and ``wait`` block until the clock passes their deadline; ``wait`` also returns True as soon
    as its waitable is woken. With ``auto_advance=True`` they move the clock to their deadline themselves
    and return at once (``wait`` still returns True if its waitable is already woken), for single-threaded
    code under test that no other thread would advance.
    """

    def __init__(self, start: datetime | None = None, *, auto_advance: bool = False) -> None:
        start = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError(f"SteppedClock start must be timezone-aware, got {start!r}")
        self._epoch = start.timestamp()
        self._offset = 0.0
        self._auto_advance = auto_advance
        self._moved = threading.Condition()
        self._waiters = 0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def time(self) -> float:
        return self._epoch + self._offset

    def monotonic(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not go back: advance({seconds})")
        with self._moved:
            self._offset += seconds
            self._moved.notify_all()

    def set(self, when: datetime) -> None:
        """Move the wall time forward to ``when`` (aware)."""
        self.advance((when - self.now()) / timedelta(seconds=1))

    @property
    def waiters(self) -> int:
        """Threads blocked in ``sleep`` or ``wait`` right now."""
        return self._waiters

    def wait_for_waiters(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block (in real time, at most ``timeout``) until ``count`` threads wait on this clock.

        A test calls it before ``advance()`` so that the thread under test has reached its wait and the
        step is not lost in a race with its start.
        """
        deadline = _time.monotonic() + timeout
        while self._waiters < count:
            if _time.monotonic() >= deadline:
                raise TimeoutError(f"{self._waiters} of {count} threads waiting on the clock after {timeout} s")
            _time.sleep(_POLL)

    def sleep(self, seconds: float) -> None:
        if self._auto_advance:
            self.advance(max(0.0, seconds))
            return
        deadline = self._offset + max(0.0, seconds)
        with self._moved:
            self._waiters += 1
            try:
                while self._offset < deadline:
                    self._moved.wait()
            finally:
                self._waiters -= 1

    def wait(self, waitable: Waitable, timeout: float | None) -> bool:
        if self._auto_advance and timeout is not None:
            if waitable.wait(0):
                return True
            self.advance(max(0.0, timeout))
            return False
        deadline = None if timeout is None else self._offset + max(0.0, timeout)
        with self._moved:
            self._waiters += 1
        try:
            while deadline is None or self._offset < deadline:
                if waitable.wait(_POLL):
                    return True
            return False
        finally:
            with self._moved:
                self._waiters -= 1
