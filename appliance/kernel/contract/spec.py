"""A job's effective spec: everything that decides when and how its slots run (schedule, zone, lease TTL, grace,
retries and the policy: overlap, jitter, calendars, timeout, isolation) and what a trigger may give it (its
declared parameters), from TOML and environment together.

Its JSON is canonical (sorted keys, calendars' definitions whole, an ``.ics`` file's text included), so its hash
names one spec: a worker that starts with a spec its job never had stores it as the job's next version
(``appliance.kernel.protocol.spec_versions``), every run records the version it ran under, and ``appliance
schedule diff`` rebuilds two versions' plans from their JSON alone. The sidecar builds a job's plan from the
spec its workers publish, without importing the job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.kernel.contract.policy import Policy
from appliance.kernel.schedule.model import Schedule, parse_schedule
from appliance.kernel.schedule.plan import PlannedSlot, fire_times, plan


@dataclass(frozen=True)
class EffectiveSpec:
    job: str
    schedule: Schedule
    lock_ttl: float
    grace: float
    max_retries: int
    policy: Policy
    #: The declared parameters as JSON (``appliance.kernel.contract.params.Param.to_json``).
    params: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, job: Any) -> EffectiveSpec:
        """The spec of a ``JobSettings``."""
        return cls(job.name, job.schedule, job.lock_ttl, job.grace, job.max_retries, job.policy,
                   tuple(param.to_json() for param in getattr(job, "params", ())))

    def to_json(self) -> dict[str, Any]:
        found = {"job": self.job, "schedule": self.schedule.text, "timezone": self.schedule.tz.key,
                 "lock_ttl": self.lock_ttl, "grace": self.grace, "max_retries": self.max_retries,
                 "policy": self.policy.to_json()}
        if self.params:  # absent when none: the hash of a spec without parameters stays what it was
            found["params"] = list(self.params)
        return found

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EffectiveSpec:
        return cls(data["job"], parse_schedule(data["schedule"], data["timezone"]), float(data["lock_ttl"]),
                   float(data["grace"]), int(data["max_retries"]), Policy.from_json(data.get("policy") or {}),
                   tuple(data.get("params") or ()))

    @property
    def canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """The first 16 hex digits of the canonical JSON's sha256: the spec's name."""
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:16]

    def plan(self, after: datetime, count: int) -> list[PlannedSlot]:
        return plan(self.job, self.schedule, self.policy.jitter, self.policy.calendars, after, count)

    def fire_times(self, after: datetime, until: datetime) -> dict[datetime, PlannedSlot]:
        return fire_times(self.job, self.schedule, self.policy.jitter, self.policy.calendars, after, until)
