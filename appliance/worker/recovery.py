"""What the loop does after a fault, beside its own schedule: run once the latest slot an outage of Redis or
PostgreSQL kept from running (while it is still the job's latest and within grace), and take over the slot of
a holder that died (once its lease has expired without a finish).

``Recovery`` is a part of ``appliance.worker.loop.Worker`` (a mixin): it uses the worker's timers, pool,
dispatch and state, declared here.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import redis

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.logs import fields
from appliance.worker.dispatch import Dispatch
from appliance.worker.pool import RunPool
from appliance.worker.runner import Runner

log = logging.getLogger("appliance.worker")

CATCH_UP_EVERY = 1.0  # while a slot skipped during an outage may still run


class Recovery:
    redis: redis.Redis
    runner: Runner
    pool: RunPool
    clock: Clock
    _lock: threading.Lock
    _watching: set[str]
    _unavailable: dict[str, Dispatch]
    _catch_up_armed: bool

    @property
    def stopping(self) -> bool:
        raise NotImplementedError

    def after(self, delay: float, action: Callable[[], None]) -> None:
        raise NotImplementedError

    def _dispatch(self, d: Dispatch) -> None:
        raise NotImplementedError

    # -- catch-up of slots an outage kept from running ------------------------------------------------
    def _arm_catch_up(self) -> None:
        with self._lock:
            if self._catch_up_armed:
                return
            self._catch_up_armed = True
        self.after(CATCH_UP_EVERY, lambda: self.pool.submit(self._catch_up))

    def _catch_up(self) -> None:
        """Run once the latest slot an outage skipped (or the retry it kept from running), if it is still the
        job's latest and within grace and the services are back. On a pool thread: probing a paused server
        must not hold up the loop."""
        try:
            now = self.clock.now()
            due: dict[str, Dispatch] = {}
            for name, d in list(self._unavailable.items()):
                if d.job.schedule.last_at_or_before(now) != d.slot or (now - d.slot).total_seconds() > d.job.grace:
                    self._unavailable.pop(name, None)  # a later slot came, or grace ran out: it stays skipped
                    if d.attempt > 1:  # the failed attempt before it decides the slot
                        self.runner.claims.record_slot(name, d.slot, Outcome.FAILED,
                                                       "retry not run: a service was unavailable until its grace ended")
                else:
                    due[name] = d
            if due and self._services_up():
                for name, d in due.items():
                    self._unavailable.pop(name, None)
                    log.info("catching up a slot skipped during an outage",
                             extra=fields(job=name, slot=d.slot.isoformat(), attempt=d.attempt))
                    self._dispatch(replace(d, catch_up=True))
        finally:
            with self._lock:
                self._catch_up_armed = False
            if self._unavailable and not self.stopping:
                self._arm_catch_up()

    def _services_up(self) -> bool:
        try:
            self.redis.ping()
            if self.runner.ledger is not None:
                self.runner.ledger.ping()
        except Exception:  # noqa: BLE001 - still down: try again later
            return False
        return True

    # -- takeover of a slot whose holder died ---------------------------------------------------------
    def _watch_holder(self, job: JobSettings, pttl: int, slot: datetime | None = None) -> None:
        """Another run holds the job (or, under overlap = allow, ``slot``'s own lease). If its holder dies (the
        lease expires without a finish) while its slot is still the job's latest (any slot under allow, whose
        slots run side by side) and within lock TTL + grace, run that slot here, once."""
        lease = keys.slot_lease(job.name, iso(slot)) if slot is not None and job.policy.per_slot else job.name
        with self._lock:
            if lease in self._watching:
                return
            self._watching.add(lease)
        try:
            seen = self.redis.hget(keys.RUNNING, lease)
        except redis.RedisError:
            seen = None
        if seen is None:
            with self._lock:
                self._watching.discard(lease)
            return
        self.after(max(pttl, 0) / 1000 + 0.05, lambda: self._check_holder(job, seen, lease))

    def _check_holder(self, job: JobSettings, seen: str, lease: str) -> None:
        with self._lock:
            self._watching.discard(lease)
        if self.stopping:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(keys.RUNNING, lease)
            pipe.pttl(keys.lock(lease))
            current, pttl = pipe.execute()
        except redis.RedisError:
            return
        if current != seen:
            return  # the holder finished (or a newer run started): nothing to take over
        if pttl > 0:
            with self._lock:
                self._watching.add(lease)
            self.after(pttl / 1000 + 0.05, lambda: self._check_holder(job, seen, lease))
            return
        held = json.loads(seen)
        if held.get("trigger") != "schedule":
            return  # a manual run died: nothing to run again; the next holder closes it as abandoned
        slot = datetime.fromisoformat(held["slot"].replace("Z", "+00:00"))
        now = self.clock.now()
        deadline = slot + timedelta(seconds=job.lock_ttl + job.grace)
        per_slot = lease != job.name
        if (not per_slot and job.schedule.last_at_or_before(now) != slot) or now > deadline:
            return  # a later slot runs on its own; its start closes the dead run as abandoned
        log.warning("holder of a slot died; taking the slot over", extra=fields(job=job.name, slot=slot.isoformat()))
        # Under allow the slot runs beside later ones: it is not a catch-up that could make them wait or coalesce.
        self._dispatch(Dispatch(job, slot, catch_up=not per_slot))
