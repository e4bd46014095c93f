"""The worker's side of a backfill: claim a planned slot of a job it runs, run it like any run, settle it.

A claimed slot is dispatched as ``Source.BACKFILL`` with its historical slot, marked as a catch-up: it takes the
job's lease (so it never runs beside a live run of the job), and a live slot that comes meanwhile waits for it,
on this worker or any replica, within its grace, instead of being skipped (``appliance.worker.catch_up``). Its
fence is issued by ``appliance_start_backfill``, which refuses a slot whose effect committed already. One slot
per job at a time on each worker; the next is claimed when one ends, on a control message, and every refresh.

Nothing of this runs on the loop's thread: PostgreSQL may be slow or down.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.protocol import backfill
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.runtime.logs import fields
from appliance.worker.dispatch import Attempt, Dispatch, Request, Source
from appliance.worker.pool import RunPool
from appliance.worker.runner import Runner


class Worker(Protocol):
    """What the pump needs of ``appliance.worker.loop.Worker`` (named here, not imported: no cycle)."""

    runner: Runner
    pool: RunPool
    jobs: dict[str, JobSettings]

    @property
    def stopping(self) -> bool: ...

    @property
    def paused_jobs(self) -> set[str]: ...

    def running_jobs(self) -> list[str]: ...

    def after(self, delay: float, action: Callable[[], None]) -> None: ...

    def _dispatch(self, d: Dispatch) -> None: ...

log = logging.getLogger("appliance.worker.backfill")

#: After a slot found its job's lease busy, or a service down, look again this much later at the latest.
BUSY_AGAIN = 1.0


class BackfillPump:
    def __init__(self, worker: Worker):
        self.worker = worker
        self._polling = threading.Lock()
        self._queued = threading.Lock()  # guards the two flags below
        self._scheduled = False  # a look is queued or running
        self._again = False  # asked for again while one was queued or running
        self._failing = False
        #: Whether the last look found work or a busy job: the end of any run then looks again.
        self.pending = True

    @property
    def _pool(self):
        ledger = self.worker.runner.ledger
        return ledger.pool if ledger is not None else None

    def poll_soon(self) -> None:
        """Look for planned slots on a pool thread (at most one look at a time). Asked for again while a look is
        queued or running (every run's end of a herd asks), it makes one more look after it, not one per ask."""
        if self._pool is None or self.worker.stopping:
            return
        with self._queued:
            if self._scheduled:
                self._again = True
                return
            self._scheduled = True
        self.worker.pool.submit(self._looks)

    def _looks(self) -> None:
        while True:
            with self._queued:
                self._again = False
            self.poll()
            with self._queued:
                if not self._again or self.worker.stopping:
                    self._scheduled = False
                    return

    def poll(self) -> None:
        if not self._polling.acquire(blocking=False):
            return
        try:
            self._poll()
        except Exception as exc:  # noqa: BLE001 - PostgreSQL or Redis down: the next refresh looks again
            if not self._failing:
                log.warning("backfills not looked at", extra=fields(error=f"{type(exc).__name__}: {exc}"))
            self._failing = True
        else:
            self._failing = False
        finally:
            self._polling.release()

    def _poll(self) -> None:
        worker = self.worker
        busy = set(worker.running_jobs())
        idle = [name for name in worker.jobs if name not in busy and name not in worker.paused_jobs]
        self.pending = bool(busy)  # a busy job may have planned slots: look again when a run ends
        if not idle:
            return
        live = [view.id for view in worker.runner.state.workers.live()]
        with self._pool.connection(timeout=2.0) as conn:
            if backfill.reclaim(conn, [*live, worker.runner.worker_id]):
                log.info("backfill slots of workers that are gone planned again")
            for name in backfill.with_planned(conn, idle):  # one statement, not one per idle job
                claimed = backfill.claim(conn, [name], worker.runner.worker_id)
                if claimed is None:
                    continue
                self.pending = True
                log.info("backfill slot claimed", extra=fields(job=name, backfill=claimed.backfill,
                                                               slot=claimed.slot.isoformat()))
                worker._dispatch(Dispatch(worker.jobs[name], claimed.slot, Source.BACKFILL,
                                          request=Request("backfill", claimed.actor, backfill=claimed.backfill),
                                          catch_up=True))

    def settle(self, d: Dispatch, result: Attempt) -> bool:
        """After an attempt of a backfill slot: record where the slot stands. False when the loop still has to
        act (a retry of the slot is due)."""
        if result.retry:
            return False
        ident = d.request.backfill if d.request else None
        if ident is None or self._pool is None:
            return True
        if result.claim is Claim.DONE:
            state, outcome = "committed", "success"
        elif result.unavailable or result.claim in (Claim.LOCKED, Claim.RUNNING):
            state, outcome = "planned", None  # the lease was busy, or Redis or PostgreSQL down: claimed again later
        else:  # it ran (or the worker failed running it): the ledger has its outcome
            state, outcome = "done", result.outcome.value if result.outcome else None
        try:
            with self._pool.connection(timeout=2.0) as conn:
                backfill.settle(conn, ident, d.slot, state, outcome)
        except Exception as exc:  # noqa: BLE001 - left claimed: planned again once this worker is gone
            log.warning("backfill slot not settled", extra=fields(job=d.job.name, error=type(exc).__name__))
        if state == "planned":
            delay = max(result.holder_pttl / 1000, 0.05) if result.holder_pttl else BUSY_AGAIN
            self.worker.after(min(delay, BUSY_AGAIN), self.poll_soon)
        else:
            self.poll_soon()
        return True

    def release(self, d: Dispatch) -> None:
        """A dispatch this worker will not run (it already runs the job): the slot goes back to planned."""
        ident = d.request.backfill if d.request else None
        if ident is None or self._pool is None:
            return
        with contextlib.suppress(Exception), self._pool.connection(timeout=2.0) as conn:
            backfill.settle(conn, ident, d.slot, "planned", None)
