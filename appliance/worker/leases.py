"""The keeper thread: renews every held lease at a third of its TTL and publishes the worker's heartbeat.

Renewal is compare-and-expire, so only the owner extends a lease. When a renewal finds the lease gone
(expired, Redis restarted, an operator's ``redis-cli DEL``) or cannot reach Redis before the lease would have
expired, the run's cancel token is set: the job stops at its next checkpoint, and the loss is logged and
counted as ``lock_lost``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from appliance.kernel import locks
from appliance.kernel.clock import SYSTEM, Clock
from appliance.kernel.context import CancelToken
from appliance.kernel.logs import fields

log = logging.getLogger("appliance.worker.leases")


@dataclass
class Lease:
    """A lease held by a run: ``owner`` is its owner token in ``lock:<job>``."""

    job: str
    owner: str
    ttl: float
    cancel: CancelToken
    expires: float = 0.0  # monotonic time after which Redis has surely dropped the key
    next_renew: float = 0.0
    lost: bool = False
    run_id: str = ""
    on_lost: Callable[[Lease], None] | None = field(default=None, repr=False)
    clock: Clock = field(default=SYSTEM, repr=False)

    def __post_init__(self) -> None:
        now = self.clock.monotonic()
        self.expires = now + self.ttl
        self.next_renew = now + self.ttl / 3


class LeaseKeeper:
    def __init__(self, scripts: locks.Scripts, heartbeat: Callable[[], None], heartbeat_every: float,
                 clock: Clock = SYSTEM):
        self.scripts = scripts
        self.heartbeat = heartbeat
        self.heartbeat_every = heartbeat_every
        self.clock = clock
        self._leases: dict[int, Lease] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._next_beat = 0.0
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hold(self, lease: Lease) -> Lease:
        with self._cond:
            self._leases[id(lease)] = lease
            self._cond.notify()
        return lease

    def drop(self, lease: Lease) -> None:
        with self._cond:
            self._leases.pop(id(lease), None)

    def held(self) -> list[Lease]:
        with self._cond:
            return list(self._leases.values())

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                due = [lease for lease in self._leases.values() if lease.next_renew <= self.clock.monotonic()]
            for lease in due:
                self._renew(lease)
            if self.clock.monotonic() >= self._next_beat:
                self._beat()
            with self._cond:
                if self._stopping:
                    return
                wake = min([self._next_beat, *(lease.next_renew for lease in self._leases.values())])
                self.clock.wait(self._cond, max(0.0, wake - self.clock.monotonic()))

    def _beat(self) -> None:
        try:
            self.heartbeat()
            self._next_beat = self.clock.monotonic() + self.heartbeat_every
        except redis.RedisError as exc:
            log.debug("heartbeat failed: %s", exc)
            self._next_beat = self.clock.monotonic() + min(1.0, self.heartbeat_every)

    def _renew(self, lease: Lease) -> None:
        started = self.clock.monotonic()
        try:
            ours = locks.renew(self.scripts, lease.job, lease.owner, lease.ttl)
        except redis.RedisError as exc:
            if self.clock.monotonic() < lease.expires:
                lease.next_renew = self.clock.monotonic() + min(0.5, lease.ttl / 10)
                log.warning("could not renew lease, retrying", extra=fields(job=lease.job, error=str(exc)))
                return
            ours = False
        if ours:
            lease.expires = started + lease.ttl
            lease.next_renew = started + lease.ttl / 3
            return
        self.drop(lease)
        lease.lost = True
        lease.cancel.cancel("lock lost")
        if lease.on_lost:
            lease.on_lost(lease)
