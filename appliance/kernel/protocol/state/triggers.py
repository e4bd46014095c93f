"""Triggers: requests to run a job once now, queued per job in Redis (``appliance:triggers:<job>``).

The CLI, the admin API and a dead letter's retry push one; the worker that takes the job's lease pops it, so
exactly one worker serves each trigger, under the job's lease.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from appliance.kernel.protocol import keys
from appliance.kernel.protocol.owner import iso, new_run_id
from appliance.kernel.protocol.state.jobs import JobTable
from appliance.kernel.protocol.state.stored import loads
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.json_object import JsonObject


@dataclass(frozen=True)
class Trigger:
    """One request to run ``job`` once: who asked, why, when, and what the run is to know (``payload``: free-form
    JSON, e.g. the dead letter a retry serves). ``params``: the job's parameters as checked where the trigger was
    made (``ctx.params``); ``slot``: the instant the run is for (``ctx.slot``; ISO 8601, default: when it runs)."""

    id: str
    job: str
    by: str
    reason: str
    at: str
    payload: JsonObject | None = None
    params: JsonObject | None = None
    slot: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trigger:
        return cls(id=data["id"], job=data["job"], by=data["by"], reason=data["reason"], at=data["at"],
                   payload=data.get("payload"), params=data.get("params"), slot=data.get("slot"))

    def to_json(self) -> JsonObject:
        found: JsonObject = {"id": self.id, "job": self.job, "by": self.by, "reason": self.reason, "at": self.at,
                             "payload": self.payload}
        if self.params is not None:
            found["params"] = self.params
        if self.slot is not None:
            found["slot"] = self.slot
        return found


class Triggers:
    def __init__(self, client: redis.Redis, clock: Clock, jobs: JobTable):
        self.client, self.clock, self.jobs = client, clock, jobs

    def request(self, job: str, by: str, reason: str = "manual", payload: JsonObject | None = None,
                params: JsonObject | None = None, slot: str | None = None) -> str:
        """Ask the cluster to run ``job`` once now, under its lease; one worker takes it. Returns its id.
        ``params`` must have been checked against the job's declaration (``appliance.kernel.contract.params``)."""
        self.jobs.require(job)
        trigger = Trigger(new_run_id(), job, by, reason, iso(self.clock.now()), payload, params, slot)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(keys.triggers(job), json.dumps(trigger.to_json()))
        pipe.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "trigger", "job": job}))
        pipe.execute()
        return trigger.id

    def take(self, job: str) -> Trigger | None:
        """The oldest pending trigger of ``job``, removed atomically (one worker gets it)."""
        found = loads(self.client.rpop(keys.triggers(job)))
        return Trigger.from_json(found) if found else None

    def pending(self, job: str) -> int:
        return int(self.client.llen(keys.triggers(job)))
