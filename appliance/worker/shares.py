"""A herd shared among the live workers: each worker first claims the slots of the jobs it is the rendezvous
owner of (the live worker running the job whose hash of ``job|worker`` is highest), and a moment before the
instant (``REST_BEFORE``) the rest, which the other workers have taken by then unless they are gone, slow or
do not run the job.

Without it the first worker to reach an instant takes its whole herd in one acquire and the others find every
lease held: one worker starts every run of the instant, however many there are. Shares are a preference, not a
guarantee: the leases decide who runs a slot, so workers that see different live sets (a heartbeat just
expired) at worst claim a job together (one wins, as always) or late (at ``REST_BEFORE``).
"""

from __future__ import annotations

import hashlib
import logging

import redis

from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.worker.dispatch import Dispatch

log = logging.getLogger("appliance.worker")

#: The other workers' shares of a herd are claimed this long before its instant (every worker claims its own
#: share at least ``CLAIM_LEAD``, 50 ms, before it).
REST_BEFORE = 0.02
#: How often the live workers are read again (two Redis round trips).
REFRESH = 5.0


def _rank(job: str, worker: str) -> bytes:
    return hashlib.blake2b(f"{job}|{worker}".encode(), digest_size=8).digest()


class Shares:
    def __init__(self, state: ClusterState, me: str, clock: Clock = SYSTEM):
        self.state = state
        self.me = me
        self.clock = clock
        self._live: list[tuple[str, frozenset[str]]] = []
        self._owners: dict[str, str] = {}
        self._read_at: float | None = None

    def split(self, herd: list[Dispatch]) -> tuple[list[Dispatch], list[Dispatch]]:
        """(this worker's share, the rest) of ``herd``; all of it is this worker's when it is alone."""
        self._refresh()
        if len(self._live) < 2:
            return herd, []
        mine: list[Dispatch] = []
        rest: list[Dispatch] = []
        for d in herd:
            (mine if self.owner(d.job.name) == self.me else rest).append(d)
        return mine, rest

    def owner(self, job: str) -> str:
        found = self._owners.get(job)
        if found is None:
            candidates = [worker for worker, jobs in self._live if not jobs or job in jobs] or [self.me]
            found = self._owners[job] = max(candidates, key=lambda worker: _rank(job, worker))
        return found

    def _refresh(self) -> None:
        now = self.clock.monotonic()
        if self._read_at is not None and now - self._read_at < REFRESH:
            return
        self._read_at = now
        try:
            views = self.state.workers.live()
        except redis.RedisError:
            return  # Redis down: the claims fail anyway; keep the last view
        live = [(view.id, frozenset(view.beat.jobs)) for view in views]
        if self.me not in {worker for worker, _ in live}:
            live.append((self.me, frozenset()))  # before its first heartbeat
        self._live, self._owners = sorted(live), {}
