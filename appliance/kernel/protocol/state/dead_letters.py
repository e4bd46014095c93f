"""Dead letters: runs that failed after their last retry, kept in Redis (``appliance:dlq``, ordered by
``appliance:dlq:index``) with their traceback until an operator retries or drops them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from appliance.errors import NotFound
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.owner import iso, new_run_id
from appliance.kernel.protocol.state.stored import loads
from appliance.kernel.protocol.state.triggers import Triggers
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.json_object import JsonObject


@dataclass(frozen=True)
class DeadLetter:
    """A run that gave up: its job, slot (ISO 8601 UTC), attempts, error and traceback (both redacted), run,
    worker and trigger; ``died_at`` when it was stored."""

    id: str
    job: str
    died_at: str
    error: str | None = None
    slot: str | None = None
    attempts: int | None = None
    traceback: str | None = None
    run_id: str | None = None
    worker: str | None = None
    trigger: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeadLetter:
        return cls(id=data["id"], job=data["job"], died_at=data["died_at"], error=data.get("error"),
                   slot=data.get("slot"), attempts=data.get("attempts"), traceback=data.get("traceback"),
                   run_id=data.get("run_id"), worker=data.get("worker"), trigger=data.get("trigger"))

    def to_json(self) -> JsonObject:
        return {"job": self.job, "slot": self.slot, "attempts": self.attempts, "error": self.error,
                "traceback": self.traceback, "run_id": self.run_id, "worker": self.worker, "trigger": self.trigger,
                "id": self.id, "died_at": self.died_at}


class DeadLetters:
    """``clock`` stamps ``died_at``; ``triggers`` queues a retry."""

    def __init__(self, client: redis.Redis, clock: Clock, triggers: Triggers):
        self.client, self.clock, self.triggers = client, clock, triggers

    def add(self, job: str, *, error: str | None = None, slot: str | None = None, attempts: int | None = None,
            traceback: str | None = None, run_id: str | None = None, worker: str | None = None,
            trigger: str | None = None) -> str:
        """Store a dead letter and count it (``<job>:dead_letter``); returns its id."""
        letter = DeadLetter(new_run_id(), job, iso(self.clock.now()), error, slot, attempts, traceback, run_id,
                            worker, trigger)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.DLQ, letter.id, json.dumps(letter.to_json()))
        pipe.zadd(keys.DLQ_INDEX, {letter.id: self.clock.time()})
        pipe.hincrby(keys.COUNTS, f"{job}:dead_letter", 1)
        pipe.execute()
        return letter.id

    def newest(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        ids = self.client.zrevrange(keys.DLQ_INDEX, 0, limit - 1)
        if not ids:
            return []
        return [DeadLetter.from_json(json.loads(v)) for v in self.client.hmget(keys.DLQ, ids) if v]

    def get(self, dead_id: str) -> DeadLetter:
        found = loads(self.client.hget(keys.DLQ, dead_id))
        if found is None:
            raise NotFound(f"no dead letter with id {dead_id!r}")
        return DeadLetter.from_json(found)

    def drop(self, dead_id: str) -> DeadLetter:
        letter = self.get(dead_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(keys.DLQ, dead_id)
        pipe.zrem(keys.DLQ_INDEX, dead_id)
        pipe.execute()
        return letter

    def retry(self, dead_id: str, by: str) -> str:
        """Trigger the dead letter's job once more and remove it from the list; returns the trigger id."""
        letter = self.get(dead_id)
        trigger_id = self.triggers.request(letter.job, by=by, reason=f"dead-letter retry {dead_id}",
                                           payload={"dead_letter": dead_id, "slot": letter.slot})
        self.drop(dead_id)
        return trigger_id
