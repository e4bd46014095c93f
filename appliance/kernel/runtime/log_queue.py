"""A log handler that never makes the thread that logs wait for another: records go into a queue and one
thread filters, formats and writes them.

With hundreds of runs due on one instant, each writing "run started" and "run ended", a ``StreamHandler``'s lock
is a convoy: the thread holding it loses the GIL to the other runs (the worker's switch interval is 0.5 ms) and
every other logging thread waits for it (measured: 79 ms per log call at 200 jobs on one second). Here logging
costs the calling thread a ``SimpleQueue.put``; masking secrets and formatting happen on the writer thread, in
the order the records were made.

Not kept: records still queued when the process is killed (SIGKILL, ``os._exit`` without ``logging.shutdown``);
``close()`` (called by ``logging.shutdown``, which runs at exit) writes every record queued before it.
"""

from __future__ import annotations

import logging
import queue
import threading

from appliance.kernel.runtime import tracing

_STOP = None


class BackgroundHandler(logging.Handler):
    """Hands each record to ``target`` on a thread of its own; ``target`` keeps its filters and formatter."""

    def __init__(self, target: logging.Handler):
        super().__init__()
        self.target = target
        self._queue: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._thread.start()

    # ``Handler.handle`` would take this handler's lock around ``emit``: the queue needs none.
    def handle(self, record: logging.LogRecord) -> bool:
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        # The span current in the thread that logs: the writer thread has none of its own.
        record.trace_ids = tracing.current_ids()
        self._queue.put(record)

    def _write(self) -> None:
        while True:
            record = self._queue.get()
            if record is _STOP:
                return
            self.target.handle(record)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        """Write what is queued (at most a few seconds: a full disk must not hold the exit), then close."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(5)
        self.target.close()
        super().close()
