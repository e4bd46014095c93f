"""The audit trail: every change an operator made through the CLI or the admin API (who, what, when), the newest
``AUDIT_LIMIT`` kept in Redis (``appliance:audit``, ordered by time)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from appliance.kernel.protocol import keys
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.json_object import JsonObject


@dataclass(frozen=True)
class AuditEntry:
    """``who`` did ``action`` (``job.pause``, ``lock.clear.force``, ``dlq.retry``...) to ``target`` at ``at``
    (ISO 8601 UTC); ``detail``: what else it said (a trigger id, the holder cleared)."""

    at: str
    who: str
    action: str
    target: str
    detail: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEntry:
        return cls(at=data["at"], who=data["who"], action=data["action"], target=data["target"],
                   detail=data.get("detail", ""))

    def to_json(self) -> JsonObject:
        return {"at": self.at, "who": self.who, "action": self.action, "target": self.target, "detail": self.detail}


class AuditTrail:
    """``clock`` stamps and orders the entries."""

    def __init__(self, client: redis.Redis, clock: Clock):
        self.client, self.clock = client, clock

    def record(self, who: str, action: str, target: str, detail: str = "") -> AuditEntry:
        entry = AuditEntry(iso(self.clock.now()), who, action, target, detail)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(keys.AUDIT, {json.dumps(entry.to_json()): self.clock.time()})
        pipe.zremrangebyrank(keys.AUDIT, 0, -keys.AUDIT_LIMIT - 1)
        pipe.execute()
        return entry

    def newest(self, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        return [AuditEntry.from_json(json.loads(v)) for v in self.client.zrevrange(keys.AUDIT, 0, limit - 1)]
