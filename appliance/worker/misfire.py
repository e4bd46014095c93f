"""What a worker finds at its start, and the misfire policy it applies: the newest slot of each job in the
ledger (or, without PostgreSQL, Redis' ``done`` markers) and the runs still open; the latest slot missed while
no worker ran runs once if it is within its grace (a slot whose run was abandoned: within grace + lock TTL),
older ones are recorded ``missed``.

``Misfire`` is a part of ``appliance.worker.loop.Worker`` (a mixin), like ``appliance.worker.recovery``: it uses
the worker's clients and runner, declared here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.outcomes import RERUNNABLE, Outcome
from appliance.kernel.runtime import tracing
from appliance.kernel.runtime.logs import fields
from appliance.worker.runner import Runner
from appliance.worker.slotjob import slots_between

log = logging.getLogger("appliance.worker")


class Misfire:
    redis: redis.Redis
    runner: Runner
    jobs: dict[str, JobSettings]

    def _misfire(self, job: JobSettings, now: datetime, latest: datetime, last: tuple[datetime, Outcome],
                 open_slots: set[datetime]) -> datetime | None:
        """The slot to run first, if a missed one qualifies; records the others as missed."""
        last_slot, outcome = last
        age = (now - latest).total_seconds()
        if latest == last_slot:
            window = job.grace + (job.lock_ttl if outcome is Outcome.ABANDONED else 0)
            if outcome in RERUNNABLE and age <= window:
                log.info("running a slot again", extra=fields(job=job.name, slot=latest.isoformat(), was=outcome.value))
                return latest
            return None
        if latest < last_slot:
            return None
        missed = [s for s in slots_between(job.schedule, last_slot, latest) if s not in open_slots]
        chosen = None
        if latest in open_slots:
            pass  # a run of it is open: the takeover watch decides
        elif age <= job.grace:
            chosen = latest
            log.info("running a missed slot", extra=fields(job=job.name, slot=latest.isoformat()))
        else:
            missed.append(latest)
        if missed:
            self._missed(job, missed)
        return chosen

    def _ledger_state(self) -> tuple[dict[str, tuple[datetime, Outcome]], dict[str, set[datetime]]]:
        """Per job, the newest slot of the ledger and the slots of runs still open; without PostgreSQL, the
        Redis ``done`` markers stand in for the newest slots."""
        ledger = self.runner.ledger
        if ledger is not None:
            try:
                open_slots: dict[str, set[datetime]] = {}
                for run in ledger.open_runs(self.jobs):
                    open_slots.setdefault(run.job, set()).add(run.slot)
                return ledger.last_slots(self.jobs), open_slots
            except Exception as exc:  # noqa: BLE001 - PostgreSQL down at start: fall back to Redis
                log.warning("ledger unreachable at start; misfires follow Redis' markers",
                            extra=fields(error=type(exc).__name__))
        return {name: (datetime.fromtimestamp(ms / 1000, UTC), Outcome.SUCCESS)
                for name, ms in self._done_markers().items()}, {}

    def _done_markers(self) -> dict[str, int]:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in self.jobs:
                pipe.hget(keys.slot(name), "done")
            values = pipe.execute()
        except redis.RedisError:
            return {}
        return {name: int(v) for name, v in zip(self.jobs, values, strict=True) if v is not None}

    def _missed(self, job: JobSettings, slots: list[datetime]) -> None:
        log.warning("slots missed", extra=fields(job=job.name, missed=len(slots)))
        traced_from = len(slots) - tracing.MISSED_SPANS  # a day's downtime of a 1 s job is 86,400 of them
        for index, slot in enumerate(slots):
            self.runner.claims.record_slot(job.name, slot, Outcome.MISSED, "no worker ran it within its grace",
                                           traced=index >= traced_from)
        for _ in range(min(len(slots), 1000)):
            self.runner.claims.skip(job.name, Outcome.MISSED)
