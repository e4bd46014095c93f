"""Pausing jobs cluster-wide: one job (``appliance:paused``) or every job at once (``appliance:paused-all``, seed
002's scheduler stop and start). Both are persisted in Redis and announced on the control channel, so every
worker hears of them at once."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from appliance.kernel.protocol import keys
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state.stored import loads
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.json_object import JsonObject


@dataclass(frozen=True)
class Pause:
    """Who paused (a job, or every job) and when (ISO 8601 UTC)."""

    by: str
    at: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pause:
        return cls(by=data["by"], at=data["at"])

    def to_json(self) -> JsonObject:
        return {"by": self.by, "at": self.at}


class Pauses:
    """``require`` raises ``NotFound`` for a job no worker publishes (``JobTable.require``)."""

    def __init__(self, client: redis.Redis, clock: Clock, require: Callable[[str], None]):
        self.client, self.clock, self.require = client, clock, require

    def pause(self, job: str, by: str) -> None:
        self.require(job)
        self.client.hset(keys.PAUSED, job, json.dumps(Pause(by, iso(self.clock.now())).to_json()))
        self.client.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "pause", "job": job}))

    def resume(self, job: str, by: str) -> None:
        self.require(job)
        self.client.hdel(keys.PAUSED, job)
        self.client.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "resume", "job": job, "by": by}))

    def paused(self) -> set[str]:
        """The jobs paused one by one (a pause-all leaves these flags as they are)."""
        return set(self.client.hkeys(keys.PAUSED))

    def pause_all(self, by: str) -> Pause:
        """Stop every job's slots cluster-wide (persisted) until ``resume_all``; the jobs' own pause flags are
        kept. Slots that come meanwhile are recorded ``paused``; a trigger still runs its job once. Returns
        the pause (an earlier one is kept, with who set it and when)."""
        entry = Pause(by, iso(self.clock.now()))
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.PAUSED_ALL, json.dumps(entry.to_json()), nx=True)
        pipe.get(keys.PAUSED_ALL)
        pipe.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "pause-all", "by": by}))
        kept = loads(pipe.execute()[1])
        return Pause.from_json(kept) if kept else entry

    def resume_all(self, by: str) -> Pause | None:
        """End a pause-all; each job goes on from its next slot (the paused ones are not run). Returns the
        pause it ended, or None when none was in force."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.PAUSED_ALL)
        pipe.delete(keys.PAUSED_ALL)
        pipe.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "resume-all", "by": by}))
        ended = loads(pipe.execute()[0])
        return Pause.from_json(ended) if ended else None

    def paused_all(self) -> Pause | None:
        """The pause-all in force, or None."""
        found = loads(self.client.get(keys.PAUSED_ALL))
        return Pause.from_json(found) if found else None
