"""Writes the ledger entries that must not wait on PostgreSQL: slots that did not run, and run ends that
could not be written when they happened.

The loop and the runs hand entries over and go on; a thread writes them in batches (one statement per
batch of slots). While PostgreSQL is down the entries are kept, in order, and written when it is back
(backfill). Entries beyond ``LIMIT`` are dropped oldest first, counted and logged: a worker that cannot
reach its database for days must not grow without bound; the next worker start records the gap as missed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from appliance.kernel.protocol.ledger import CloseRuns, SlotRecord
from appliance.kernel.runtime import metrics
from appliance.kernel.runtime.logs import fields

if TYPE_CHECKING:
    from appliance.kernel.protocol.ledger import Ledger

log = logging.getLogger("appliance.worker.ledger")

#: A slot record, a run end (``Ledger.finish``'s arguments), or the closing of what a stopping worker leaves.
Entry = SlotRecord | CloseRuns | tuple[Any, ...]

LIMIT = 100_000
BATCH = 1000
RETRY_EVERY = 1.0


class Recorder:
    def __init__(self, ledger: Ledger | None):
        self.ledger = ledger
        self._pending: deque[Entry] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._failing = False
        self._dropped = 0
        self._thread: threading.Thread | None = None

    def put(self, record: SlotRecord) -> None:
        self._add(record)

    def put_finish(self, args: tuple[Any, ...]) -> None:
        """Arguments of ``Ledger.finish`` for a run whose end could not be written."""
        self._add(args)

    def put_close(self, close: CloseRuns) -> None:
        """Close what the worker leaves open, once every entry before it is written."""
        self._add(close)

    def _add(self, entry: Entry) -> None:
        if self.ledger is None:
            return
        with self._cond:
            if len(self._pending) >= LIMIT:
                self._pending.popleft()
                self._dropped += 1
                metrics.LEDGER_DROPPED.inc()
            self._pending.append(entry)
            self._cond.notify()
        if self._thread is None:
            self.start()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None or self.ledger is None:
                return
            self._thread = threading.Thread(target=self._loop, name="ledger", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Write what is pending (up to ``timeout`` seconds); True when nothing is left."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        left = self.pending()
        if left:
            log.error("ledger entries not written before stop; the next start records the gap as missed",
                      extra=fields(entries=left))
        return left == 0

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._take()
            written = self._write(batch)
            with self._cond:
                if not written:
                    self._pending.extendleft(reversed(batch))
                    if self._stopping:
                        return
                    self._cond.wait(RETRY_EVERY)

    def _take(self) -> list[Entry]:
        """A run of slot records (one statement), or one other entry, from the head of the queue."""
        first = self._pending.popleft()
        if not isinstance(first, SlotRecord):
            return [first]
        batch: list[Entry] = [first]
        while self._pending and len(batch) < BATCH and isinstance(self._pending[0], SlotRecord):
            batch.append(self._pending.popleft())
        return batch

    def _write(self, batch: list[Entry]) -> bool:
        assert self.ledger is not None
        try:
            if isinstance(batch[0], SlotRecord):
                self.ledger.record(batch)  # type: ignore[arg-type]
            elif isinstance(batch[0], CloseRuns):
                self.ledger.close_worker(batch[0].worker, batch[0].reason)
            else:
                self.ledger.finish(*batch[0])
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: keep the entries and try again
            if not self._failing:
                log.warning("ledger unreachable; keeping its entries until PostgreSQL is back",
                            extra=fields(error=type(exc).__name__, pending=self.pending() + len(batch)))
                self._failing = True
            return False
        if self._failing:
            log.info("ledger reachable again; kept entries written", extra=fields(dropped=self._dropped))
            self._failing = False
        return True
