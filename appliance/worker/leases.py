"""The keeper: renews every held lease at a third of its TTL, and watches each lease's deadline on a thread that
does no I/O.

A lease is the holder's for ``ttl`` from the moment its acquire or its last successful renewal was *sent*
(Redis extended it on receiving the command, later). The holder therefore stops believing in it at
``Lease.deadline`` = that send time + ``ttl`` - ``lease_margin(ttl)``, measured on the monotonic clock: the
deadline thread cancels the run then, whatever the network does, and the margin is the time the job has to
reach its next checkpoint before a replica elsewhere can take the slot over. A partition that keeps the
connection open and moves no byte (no socket timeout fires, no TCP keepalive fails) changes nothing here.

Renewal is compare-and-expire, so only the owner extends a lease. A renewal that finds the lease gone
(expired, Redis restarted, an operator's ``redis-cli DEL``) cancels the run at once. Every Redis call of the
keeper goes through a client whose socket timeout is at most ``call_timeout``, and a renewal is not begun when
it could end after the deadline it serves: no call blocks past the earliest deadline it guards. The heartbeat
has a thread and a client of its own (``appliance.worker.heartbeat``), so a slow heartbeat never delays a
renewal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from appliance.kernel.contract.context import CancelToken
from appliance.kernel.protocol import locks
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.logs import fields

log = logging.getLogger("appliance.worker.leases")

#: The least time a job is given between its cancellation and the earliest takeover elsewhere: its next
#: checkpoint, on a machine busy enough that a thread waits for a core (measured: 0.6 s under a full test
#: suite and two more sessions' tests on two cores).
MIN_MARGIN = 1.0


def lease_margin(ttl: float) -> float:
    """Seconds before a lease's expiry in Redis at which its holder cancels the run: a tenth of the TTL, at
    least ``MIN_MARGIN``, at most a third of the TTL (a renewal at a third must still come before it)."""
    return min(ttl / 3, max(MIN_MARGIN, ttl / 10))


def call_timeout(ttls: list[float], ceiling: float) -> float:
    """The socket timeout of the keeper's Redis client for leases of these TTLs: a fifth of the shortest, so
    that a renewal begun at a third of a TTL ends, answered or not, well before that lease's deadline."""
    return max(0.05, min([ceiling, *(ttl / 5 for ttl in ttls)]))


@dataclass
class Lease:
    """A lease held by a run: ``owner`` is its owner token in ``lock:<job>``; ``confirmed`` the monotonic time
    at which its acquire (or its last successful renewal) was sent."""

    job: str
    owner: str
    ttl: float
    cancel: CancelToken
    confirmed: float | None = None
    next_renew: float = 0.0
    lost: bool = False
    run_id: str = ""
    #: The lease's name when it is not the job's: ``<job>:<slot>``, a slot's own under overlap = allow.
    name: str = ""
    on_lost: Callable[[Lease], None] | None = field(default=None, repr=False)
    clock: Clock = field(default=SYSTEM, repr=False)

    def __post_init__(self) -> None:
        if self.confirmed is None:
            self.confirmed = self.clock.monotonic()
        self.next_renew = self.confirmed + self.ttl / 3

    @property
    def sent(self) -> float:
        assert self.confirmed is not None
        return self.confirmed

    @property
    def expires(self) -> float:
        """Monotonic time after which Redis has surely dropped the key (unless renewed since)."""
        return self.sent + self.ttl

    @property
    def deadline(self) -> float:
        """Monotonic time at which the holder cancels its run unless a renewal has succeeded since."""
        return self.expires - lease_margin(self.ttl)


class LeaseKeeper:
    """``scripts``: registered on a client whose socket timeout is at most ``timeout`` seconds (see
    ``call_timeout``)."""

    def __init__(self, scripts: locks.Scripts, clock: Clock = SYSTEM, timeout: float = 0.0):
        self.scripts = scripts
        self.clock = clock
        self.timeout = timeout
        self._leases: dict[int, Lease] = {}
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # renewals wait on it
        self._watch = threading.Condition(lock)  # the deadline thread waits on it
        self._stopping = False
        # When each thread will look next on its own (None: not before it is notified). A new lease notifies a
        # thread only when it needs it sooner: the leases of a herd, taken by one acquire, wake each thread once,
        # not once per lease (each wake is a pass over every lease held).
        self._renew_wake: float | None = None
        self._deadline_wake: float | None = None
        self._threads = [threading.Thread(target=self._renew_loop, name="lease-keeper", daemon=True),
                         threading.Thread(target=self._deadline_loop, name="lease-deadline", daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def hold(self, lease: Lease) -> Lease:
        with self._cond:
            self._leases[id(lease)] = lease
            if self._renew_wake is None or lease.next_renew < self._renew_wake:
                self._renew_wake = lease.next_renew
                self._cond.notify_all()
            if self._deadline_wake is None or lease.deadline < self._deadline_wake:
                self._deadline_wake = lease.deadline
                self._watch.notify_all()
        return lease

    def drop(self, lease: Lease) -> None:
        with self._cond:
            self._leases.pop(id(lease), None)

    def held(self) -> list[Lease]:
        with self._cond:
            return list(self._leases.values())

    def stop(self, timeout: float = 2.0) -> None:
        """Stop both threads, waiting at most ``timeout`` seconds in all (they are daemons: a renewal still
        waiting for its answer ends with the process)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._watch.notify_all()
        deadline = self.clock.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - self.clock.monotonic()))

    # -- deadlines: no I/O on this thread ---------------------------------------------------------------
    def _deadline_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = self.clock.monotonic()
                late = [lease for lease in self._leases.values() if lease.deadline <= now]
                for lease in late:
                    self._leases.pop(id(lease), None)
                wake = min([lease.deadline for lease in self._leases.values()], default=None)
                if not late:
                    self._deadline_wake = wake
                    self.clock.wait(self._watch, None if wake is None else max(0.0, wake - now))
                    self._deadline_wake = None
            for lease in late:
                self._lose(lease, f"lease deadline passed: no renewal reached Redis within "
                                  f"{lease.ttl - lease_margin(lease.ttl):g} s of the last one sent")

    def _lose(self, lease: Lease, reason: str) -> None:
        if lease.lost:
            return
        lease.lost = True
        lease.cancel.cancel(reason)
        if lease.on_lost:
            lease.on_lost(lease)

    # -- renewals ---------------------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = self.clock.monotonic()
                due = [lease for lease in self._leases.values() if lease.next_renew <= now]
            for lease in due:
                self._renew(lease)
            with self._cond:
                if self._stopping:
                    return
                wake = min([lease.next_renew for lease in self._leases.values()], default=None)
                now = self.clock.monotonic()
                self._renew_wake = wake
                self.clock.wait(self._cond, None if wake is None else max(0.0, wake - now))
                self._renew_wake = None

    def _renew(self, lease: Lease) -> None:
        sent = self.clock.monotonic()
        if sent + self.timeout >= lease.deadline:
            # An answer could come after the deadline: leave the lease to the deadline thread.
            lease.next_renew = lease.deadline + lease.ttl
            return
        try:
            ours = locks.renew(self.scripts, lease.name or lease.job, lease.owner, lease.ttl)
        except redis.RedisError as exc:
            lease.next_renew = self.clock.monotonic() + min(0.5, lease.ttl / 10)
            log.warning("could not renew lease, retrying", extra=fields(job=lease.job, error=str(exc)))
            return
        if not ours:
            self.drop(lease)
            self._lose(lease, "lease lost: renewal found it gone or taken")
            return
        with self._cond:
            if not lease.lost:
                lease.confirmed = max(lease.sent, sent)
            lease.next_renew = sent + lease.ttl / 3
            self._watch.notify_all()
