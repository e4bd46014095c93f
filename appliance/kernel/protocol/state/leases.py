"""The leases held in Redis, as an operator sees them: every ``lock:<job>`` key (seed 004's name, which
operators type), its holder, and clearing one that a dead worker left behind."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import redis

from appliance.errors import Conflict, NotFound
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.owner import parse_token
from appliance.kernel.protocol.state.workers import Workers
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.json_object import JsonObject

# Deletes the key only while it still holds the value inspected, so a lease taken meanwhile is left alone.
_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True)
class LeaseView:
    """A held lease: its job and key, the holder's owner token and what it says (host, pid, run), the lease's
    age since its run started and its TTL left (seconds), and whether the holder's heartbeat is alive."""

    job: str
    key: str
    holder: str
    host: str | None
    pid: int | None
    run_id: str | None
    age_seconds: float | None
    ttl_seconds: float | None
    holder_alive: bool

    def to_json(self) -> JsonObject:
        return {"job": self.job, "key": self.key, "holder": self.holder, "host": self.host, "pid": self.pid,
                "run_id": self.run_id, "age_seconds": self.age_seconds, "ttl_seconds": self.ttl_seconds,
                "holder_alive": self.holder_alive}


class Leases:
    """``clock`` measures the leases' ages; ``workers`` says whether a holder is alive."""

    def __init__(self, client: redis.Redis, clock: Clock, workers: Workers):
        self.client, self.clock, self.workers = client, clock, workers

    def held(self) -> list[LeaseView]:
        """Every ``lock:*`` key, by key."""
        names = sorted(self.client.scan_iter(match="lock:*", count=500))
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
            pipe.pttl(name)
        values = pipe.execute()
        result = []
        for i, name in enumerate(names):
            holder, pttl = values[2 * i], values[2 * i + 1]
            if holder is not None:
                result.append(self._view(name.removeprefix("lock:"), holder, pttl))
        return result

    def _view(self, job: str, holder: str, pttl: int) -> LeaseView:
        owner = parse_token(holder)
        age = None
        if owner:
            try:
                started = datetime.fromisoformat(owner.started.replace("Z", "+00:00")).timestamp()
                age = round(self.clock.time() - started, 3)
            except ValueError:
                age = None
        return LeaseView(
            job=job, key=keys.lock(job), holder=holder, host=owner.host if owner else None,
            pid=owner.pid if owner else None, run_id=owner.run_id if owner else None, age_seconds=age,
            ttl_seconds=round(pttl / 1000, 3) if pttl and pttl > 0 else None,
            holder_alive=bool(owner and self.workers.is_alive(owner.worker_id)),
        )

    def clear(self, job: str, force: bool = False) -> LeaseView:
        """Delete ``lock:<job>``; returns the lease it deleted. Refused (``Conflict``) while its holder's heartbeat
        is alive unless ``force``."""
        key = keys.lock(job)
        holder = self.client.get(key)
        if holder is None:
            raise NotFound(f"no lease is held on {job!r} ({key} does not exist)")
        lease = self._view(job, holder, self.client.pttl(key))
        if lease.holder_alive and not force:
            raise Conflict(f"{key} is held by a live worker ({holder}); wait for its run to end, or force it")
        if not self.client.eval(_DELETE_IF, 1, key, holder):
            raise Conflict(f"{key} changed hands while being cleared; look again")
        return lease
