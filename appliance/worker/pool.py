"""A bounded pool of daemon threads for runs.

Daemon threads, unlike ``concurrent.futures``' (joined at interpreter exit), let the worker exit on time
when a job ignores its checkpoints past ``SHUTDOWN_TIMEOUT``; its lease is released by the worker before.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("appliance.worker.pool")


class RunPool:
    def __init__(self, size: int, name: str = "run"):
        self._tasks: queue.Queue[Callable[[], None]] = queue.Queue()
        self._idle = threading.Condition()
        self._busy = 0
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        with self._idle:
            self._busy += 1
        self._tasks.put(task)

    def _serve(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                task()
            except BaseException:
                log.exception("run task crashed")
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no task is queued or running; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)
