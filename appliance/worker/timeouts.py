"""Run timeouts (``timeout = "10m"``): at the timeout the run's cancel token is set, the same path a lost lease and
a shutdown take, so the job stops at its next checkpoint and the run ends ``timed_out``. A run still going
``SHUTDOWN_TIMEOUT`` later is ended hard: a child process (``isolation = process``) is killed by its parent
(``appliance.worker.isolation``, which watches the same token); a thread cannot be, so ``hard`` records it
``timed_out`` and releases its lease.

One thread watches every deadline on the injected clock and does no I/O but the ``hard`` callback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.kernel.contract.context import CancelToken
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.runtime.clock import Clock

log = logging.getLogger("appliance.worker.timeouts")


@dataclass
class _Watch:
    timeout: float
    soft: float  # monotonic: cancel at the next checkpoint
    hard: float  # monotonic: end it
    cancel: CancelToken
    lease: Any
    end_hard: bool  # a thread, which only the ``hard`` callback can end (a child process is killed by its parent)
    fired: bool = False


class Timeouts:
    def __init__(self, clock: Clock, grace: float, hard: Callable[[Any, str], None]):
        self.clock = clock
        self.grace = grace
        self.hard = hard
        self._watches: dict[str, _Watch] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, run_id: str, timeout: float, cancel: CancelToken, lease: Any, end_hard: bool = True) -> None:
        now = self.clock.monotonic()
        with self._cond:
            self._watches[run_id] = _Watch(timeout, now + timeout, now + timeout + self.grace, cancel, lease,
                                           end_hard)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="run-timeouts", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def drop(self, run_id: str) -> None:
        with self._cond:
            self._watches.pop(run_id, None)

    def _loop(self) -> None:
        while True:
            hard: list[tuple[str, _Watch]] = []
            with self._cond:
                now = self.clock.monotonic()
                for run_id, w in list(self._watches.items()):
                    if not w.fired and now >= w.soft:
                        w.fired = True
                        w.cancel.cancel(f"timed out after {w.timeout:g} s", Outcome.TIMED_OUT.value)
                    if now >= w.hard:
                        hard.append((run_id, w))
                        del self._watches[run_id]
                wake = min([w.hard if w.fired else w.soft for w in self._watches.values()], default=None)
                if not hard:
                    self.clock.wait(self._cond, None if wake is None else max(0.0, wake - now))
            for run_id, w in hard:
                if w.cancel.outcome == Outcome.TIMED_OUT.value and w.end_hard:
                    self.hard(w.lease, f"timed out after {w.timeout:g} s and did not stop within "
                                       f"SHUTDOWN_TIMEOUT ({self.grace:g} s)")
                    log.warning("run ended hard after its timeout", extra={"run_id": run_id})
