"""Group commit: many threads each ask for one operation; whoever finds none in flight sends everything asked
for so far as one call, and every caller gets its own answer (or the batch's exception).

Alone, a caller sends its operation at once (one call of one item: no wait is added). Under a herd (hundreds of
runs ending within milliseconds) the calls become one per flight instead of one per run: the runs' ends of an
instant cost a few PostgreSQL statements and Redis round trips, not hundreds, and no run waits in a queue of
connections for its own. Each caller waits on an event of its own, woken only when its answer is there (or
when it is its turn to lead the next flight): a condition shared by hundreds of waiters would wake them all at
every flight, and they would queue for its lock and the GIL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: The most items one call carries (a statement's arrays, a script's arguments stay small).
LIMIT = 500


class _Pending(Generic[T, R]):
    __slots__ = ("done", "error", "event", "item", "result")

    def __init__(self, item: T):
        self.item = item
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = False
        self.event = threading.Event()  # set when done, or when this caller leads the next flight


class GroupCommit(Generic[T, R]):
    """``call(items)`` does the operation for a list of items and returns one answer per item, in order; an
    exception it raises is every item's."""

    def __init__(self, call: Callable[[list[T]], Sequence[R]], limit: int = LIMIT):
        self._call = call
        self._limit = limit
        self._lock = threading.Lock()
        self._queue: list[_Pending[T, R]] = []
        self._flying = False

    def __call__(self, item: T) -> R:
        mine: _Pending[T, R] = _Pending(item)
        with self._lock:
            self._queue.append(mine)
            lead = not self._flying
            self._flying = True
        if not lead:
            mine.event.wait()
        while not mine.done:  # this caller leads flights until its own item has flown
            with self._lock:
                batch, self._queue = self._queue[: self._limit], self._queue[self._limit:]
            self._fly(batch)
        with self._lock:
            if self._queue:
                self._queue[0].event.set()  # not done: it leads the next flight
            else:
                self._flying = False
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]

    def _fly(self, batch: list[_Pending[T, R]]) -> None:
        try:
            results = self._call([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(results)} answers")
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets it, the leader too
            for p in batch:
                p.error = exc
        else:
            for p, result in zip(batch, results, strict=True):
                p.result = result
        for p in batch:
            p.done = True
            p.event.set()
