"""What a job run receives: its identity, its clients, its fencing number and a way to stop at checkpoints."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from appliance.errors import Cancelled
from appliance.kernel.runtime.clock import SYSTEM, Clock

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool
    from redis import Redis

    from appliance.config import Config


class CancelToken:
    """Set when the run must stop: its lease was lost or the worker is shutting down. ``clock``: the worker's,
    which its waits are measured on."""

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self._event = threading.Event()
        self.clock = clock
        self.reason = ""
        #: What the run ends as when it stops here: ``cancelled``, ``timed_out`` or ``cancelled_by_newer``.
        self.outcome = "cancelled"

    def cancel(self, reason: str, outcome: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self.outcome = outcome
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (of the injected clock); True if cancelled meanwhile."""
        return self.clock.wait(self._event, seconds)


@dataclass
class RunContext:
    """One run of one job.

    Jobs call ``checkpoint()`` between units of work (batches): it raises ``Cancelled`` (a BaseException,
    so ``except Exception`` does not swallow it) when the lease was lost or the worker is stopping; the work
    done so far must already be committed so the next slot continues it. ``fence`` is the number PostgreSQL
    issued when this run took its lease (it only grows): make the final transaction call
    ``appliance.kernel.protocol.fencing.complete_slot`` (or ``check_fence``) so a run that lost its lease cannot commit.
    ``trigger`` is ``schedule`` for a slot of the schedule, ``backfill`` for a slot of the past run on purpose
    (``appliance backfill``; ``slot`` is that historical slot), else the reason of a manual run. ``params`` are
    the job's declared parameters: a trigger's values checked against the declaration, the defaults for the rest
    (and for every scheduled run).
    """

    job: str
    slot: datetime
    run_id: str
    attempt: int
    owner: str
    config: Config
    redis: Redis
    db: ConnectionPool | None
    log: logging.LoggerAdapter
    cancel: CancelToken = field(default_factory=CancelToken)
    trigger: str = "schedule"
    services: dict[str, Any] = field(default_factory=dict)
    issued_fence: int | None = None
    processed_count: int = 0
    backlog: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def fence(self) -> int:
        """This run's fencing number, issued when the run took its lease."""
        if self.issued_fence is None:
            raise RuntimeError("no PostgreSQL configured: fencing numbers are issued by PostgreSQL")
        return self.issued_fence

    @property
    def clock(self) -> Clock:
        """The worker's clock: jobs read the time here (``now()``, ``monotonic()``), so tests can step it."""
        return self.cancel.clock

    @property
    def token(self) -> CancelToken:
        """The cancel token under its earlier name (``owner`` is the lease's owner token)."""
        return self.cancel

    @property
    def cancelled(self) -> bool:
        return self.cancel.cancelled

    def checkpoint(self) -> None:
        """Raise ``Cancelled`` if the run must stop; otherwise return at once."""
        if self.cancel.cancelled:
            raise Cancelled(self.cancel.reason)

    def sleep(self, seconds: float) -> None:
        """Sleep that ends early, raising ``Cancelled``, when the run must stop."""
        if seconds > 0 and self.cancel.wait(seconds):
            raise Cancelled(self.cancel.reason)
        self.checkpoint()

    def processed(self, n: int = 1) -> None:
        """Count ``n`` items of work done (seed 004's ``jobsProcessed``)."""
        self.processed_count += n

    def set_backlog(self, name: str, value: float) -> None:
        """Report a backlog gauge (pending recipients, queued calls, unindexed documents) for autoscalers."""
        self.backlog[name] = value
