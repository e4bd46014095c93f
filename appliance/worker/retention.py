"""The worker applies the ledger's retention to the jobs it runs, every ``RETENTION_INTERVAL`` (an hour).

Retention of the appliance's ledger belongs to the appliance, not to a job pack: it is the kernel's record, its
summaries are what ``appliance audit`` reads for old windows, and it must apply to every job whatever packs are
installed. It is not a scheduled job either: a job could be paused, disabled or left out of ``JOBS_ENABLED`` and
would then let the ledger grow; every worker applies it to its own jobs, on a pool thread (never the loop's), in
small transactions that replicas doing the same skip past (``appliance.kernel.protocol.retention``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.protocol import retention
from appliance.kernel.protocol.audit import shared_now
from appliance.kernel.runtime.logs import fields
from appliance.worker.pool import RunPool
from appliance.worker.runner import Runner

log = logging.getLogger("appliance.worker.retention")


class Worker(Protocol):
    runner: Runner
    pool: RunPool
    jobs: dict[str, JobSettings]

    @property
    def stopping(self) -> bool: ...

    def after(self, delay: float, action: Callable[[], None]) -> None: ...


class RetentionPass:
    def __init__(self, worker: Worker, every: float):
        self.worker, self.every = worker, every

    def arm(self) -> None:
        if self.worker.runner.ledger is not None and not self.worker.stopping:
            self.worker.after(self.every, lambda: self.worker.pool.submit(self.run))

    def run(self) -> None:
        ledger = self.worker.runner.ledger
        try:
            if ledger is None:
                return
            with ledger.pool.connection(timeout=2.0) as conn:
                now = shared_now(conn)
                for job in self.worker.jobs.values():
                    if self.worker.stopping:
                        return
                    pruned = retention.apply(conn, job.name, job.retention, now)
                    if pruned.slots_summarised or pruned.runs_deleted:
                        log.info("ledger retention applied", extra=fields(
                            job=job.name, slots_summarised=pruned.slots_summarised, runs_deleted=pruned.runs_deleted))
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: the next pass does it
            log.warning("ledger retention not applied", extra=fields(error=f"{type(exc).__name__}: {exc}"))
        finally:
            self.arm()
