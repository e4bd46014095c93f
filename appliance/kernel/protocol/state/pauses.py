"""Pausing jobs cluster-wide: one job (``appliance:paused``) or every job at once (``appliance:paused-all``, seed
002's scheduler stop and start). Both are persisted in Redis and announced on the control channel, so every
worker hears of them at once.

A pause says who set it, when, why (``reason``), until when (``until``: a worker ends it by itself then, on
whichever replica reaches it first: ``end_if`` deletes it only if it is still the same pause) and what happens to
the slots it held back when it ends (``on_resume``: ``skip``, ``run_latest`` or ``catch_up:N``; see
``appliance.kernel.protocol.resume``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from appliance.kernel.protocol import keys
from appliance.kernel.protocol.owner import iso
from appliance.kernel.protocol.state.stored import loads
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.json_object import JsonObject

# KEYS[1] the pause's key (hash appliance:paused, or appliance:paused-all)  ARGV[1] field ("" for the string key)
# ARGV[2] the pause's JSON as read. Deletes the pause only if it is still that one; 1 when it did.
_END_IF = """
local now
if ARGV[1] == '' then now = redis.call('GET', KEYS[1]) else now = redis.call('HGET', KEYS[1], ARGV[1]) end
if now ~= ARGV[2] then return 0 end
if ARGV[1] == '' then redis.call('DEL', KEYS[1]) else redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class Pause:
    """Who paused (a job, or every job) and when (ISO 8601 UTC); why, until when (None: until resumed) and the
    on-resume policy."""

    by: str
    at: str
    reason: str = ""
    until: str | None = None
    on_resume: str = "skip"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pause:
        return cls(by=data["by"], at=data["at"], reason=data.get("reason") or "", until=data.get("until"),
                   on_resume=data.get("on_resume") or "skip")

    def to_json(self) -> JsonObject:
        return {"by": self.by, "at": self.at, "reason": self.reason, "until": self.until,
                "on_resume": self.on_resume}

    @property
    def ends(self) -> datetime | None:
        return datetime.fromisoformat(self.until.replace("Z", "+00:00")) if self.until else None

    def describe(self) -> str:
        """What a paused slot's ledger row says: who, why, until when."""
        text = f"paused by {self.by}"
        if self.reason:
            text += f": {self.reason}"
        return text + (f" (until {self.until})" if self.until else " (until resumed)")


class Pauses:
    """``require`` raises ``NotFound`` for a job no worker publishes (``JobTable.require``)."""

    def __init__(self, client: redis.Redis, clock: Clock, require: Callable[[str], None]):
        self.client, self.clock, self.require = client, clock, require
        self._end_if = client.register_script(_END_IF)

    def _new(self, by: str, reason: str, until: str | None, on_resume: str) -> Pause:
        return Pause(by, iso(self.clock.now()), reason, until, on_resume)

    def pause(self, job: str, by: str, reason: str = "", until: str | None = None,
              on_resume: str = "skip") -> tuple[Pause | None, Pause]:
        """Pause ``job`` (a pause in force is replaced); returns the pause before, if any, and the new one."""
        self.require(job)
        entry = self._new(by, reason, until, on_resume)
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(keys.PAUSED, job)
        pipe.hset(keys.PAUSED, job, json.dumps(entry.to_json()))
        before = loads(pipe.execute()[0])
        self.client.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "pause", "job": job}))
        return (Pause.from_json(before) if before else None), entry

    def resume(self, job: str, by: str) -> Pause | None:
        """End ``job``'s pause; returns the pause it ended (None: it was not paused)."""
        self.require(job)
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(keys.PAUSED, job)
        pipe.hdel(keys.PAUSED, job)
        ended = loads(pipe.execute()[0])
        self.client.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "resume", "job": job, "by": by}))
        return Pause.from_json(ended) if ended else None

    def end_if(self, job: str | None, pause: Pause) -> bool:
        """End the pause of ``job`` (None: the pause-all) only if it is still ``pause``: of the replicas that reach
        its ``until`` together, one ends it."""
        key, name = (keys.PAUSED, job) if job else (keys.PAUSED_ALL, "")
        raw = self.client.hget(key, job) if job else self.client.get(key)
        if raw is None or Pause.from_json(json.loads(raw)) != pause:
            return False
        if not int(self._end_if(keys=[key], args=[name, raw])):
            return False
        action = {"action": "resume", "job": job} if job else {"action": "resume-all"}
        self.client.publish(keys.CONTROL_CHANNEL, json.dumps({**action, "by": "until"}))
        return True

    def paused(self) -> set[str]:
        """The jobs paused one by one (a pause-all leaves these flags as they are)."""
        return set(self.client.hkeys(keys.PAUSED))

    def each(self) -> dict[str, Pause]:
        """The jobs paused one by one, with their pauses."""
        return {job: Pause.from_json(json.loads(raw)) for job, raw in self.client.hgetall(keys.PAUSED).items()}

    def pause_all(self, by: str, reason: str = "", until: str | None = None, on_resume: str = "skip") -> Pause:
        """Stop every job's slots cluster-wide (persisted) until ``resume_all`` or ``until``; the jobs' own pause
        flags are kept. Slots that come meanwhile are recorded ``paused``; a trigger still runs its job once.
        Returns the pause (an earlier one is kept, with who set it, when and why: resume it first to change it)."""
        entry = self._new(by, reason, until, on_resume)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.PAUSED_ALL, json.dumps(entry.to_json()), nx=True)
        pipe.get(keys.PAUSED_ALL)
        pipe.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "pause-all", "by": by}))
        kept = loads(pipe.execute()[1])
        return Pause.from_json(kept) if kept else entry

    def resume_all(self, by: str) -> Pause | None:
        """End a pause-all; each job goes on from its next slot (its on-resume policy decides which of the slots
        held back run). Returns the pause it ended, or None when none was in force."""
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
