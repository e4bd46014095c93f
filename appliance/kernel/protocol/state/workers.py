"""Worker heartbeats: each worker's ``appliance:heartbeat:<id>`` with a TTL of ``HEARTBEAT_TTL``, and the set of
worker ids (``appliance:workers``), pruned of those whose heartbeat expired when read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from appliance.kernel.protocol import keys
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.json_object import JsonObject
from appliance.kernel.runtime.skew import Offset


@dataclass(frozen=True)
class Beat:
    """What a worker publishes at each heartbeat: where it runs and since when (ISO 8601 UTC), when it beat
    (epoch seconds) and its TTL, the jobs it runs and those running now, its RSS and CPU, and its clock's offset
    from Redis' clock (None when it could not measure one)."""

    host: str
    pid: int
    started: str | None
    beat_at: float
    ttl: float | None
    version: str | None
    jobs: tuple[str, ...]
    running: tuple[str, ...]
    rss_bytes: float | None = None
    cpu_seconds: float | None = None
    clock: Offset | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], now: float) -> Beat:
        """``now`` stands for a missing ``beat_at`` (a heartbeat that just beat)."""
        return cls(host=data["host"], pid=data["pid"], started=data.get("started"),
                   beat_at=data.get("beat_at", now), ttl=data.get("ttl"), version=data.get("version"),
                   jobs=tuple(data.get("jobs") or ()), running=tuple(data.get("running") or ()),
                   rss_bytes=data.get("rss_bytes"), cpu_seconds=data.get("cpu_seconds"),
                   clock=_offset(data.get("clock")))

    def to_json(self) -> JsonObject:
        return {"host": self.host, "pid": self.pid, "started": self.started, "beat_at": self.beat_at, "ttl": self.ttl,
                "version": self.version, "jobs": list(self.jobs), "running": list(self.running),
                "rss_bytes": self.rss_bytes, "cpu_seconds": self.cpu_seconds,
                "clock": self.clock.as_dict() if self.clock else None}


def _offset(value: Any) -> Offset | None:
    if not isinstance(value, dict) or value.get("offset_seconds") is None:
        return None
    return Offset(float(value["offset_seconds"]), float(value.get("error_seconds") or 0.0))


@dataclass(frozen=True)
class WorkerView:
    """A live worker: its id (``host:pid``), its last beat, and that beat's age in seconds."""

    id: str
    beat: Beat
    heartbeat_age: float

    def to_json(self) -> JsonObject:
        return {**self.beat.to_json(), "id": self.id, "heartbeat_age": self.heartbeat_age}


class Workers:
    """``clock`` measures the heartbeats' ages."""

    def __init__(self, client: redis.Redis, clock: Clock):
        self.client, self.clock = client, clock

    def beat(self, worker_id: str, beat: Beat, ttl: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.heartbeat(worker_id), json.dumps(beat.to_json()), px=int(ttl * 1000))
        pipe.sadd(keys.WORKERS, worker_id)
        pipe.execute()

    def forget(self, worker_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(keys.heartbeat(worker_id))
        pipe.srem(keys.WORKERS, worker_id)
        pipe.execute()

    def live(self) -> list[WorkerView]:
        """Live workers (heartbeat present), by id; forgets those whose heartbeat expired."""
        ids = sorted(self.client.smembers(keys.WORKERS))
        if not ids:
            return []
        beats = self.client.mget([keys.heartbeat(i) for i in ids])
        live, dead = [], []
        for worker, text in zip(ids, beats, strict=True):
            if text is None:
                dead.append(worker)
                continue
            now = self.clock.time()
            beat = Beat.from_json(json.loads(text), now)
            live.append(WorkerView(worker, beat, max(0.0, now - float(beat.beat_at))))
        if dead:
            self.client.srem(keys.WORKERS, *dead)
        return live

    def is_alive(self, worker_id: str) -> bool:
        return bool(self.client.exists(keys.heartbeat(worker_id)))
