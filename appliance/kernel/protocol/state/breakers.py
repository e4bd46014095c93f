"""The circuit breakers as the cluster sees them: every breaker that has recorded something
(``appliance.kernel.runtime.breaker`` keeps their state in Redis), read for ``/health``, ``/metrics``, the
admin API and the alerter."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from appliance.kernel.protocol import keys
from appliance.kernel.protocol.state.stored import int_or_none, iso_from_epoch
from appliance.kernel.runtime.clock import Clock
from appliance.kernel.runtime.json_object import JsonObject


@dataclass(frozen=True)
class BreakerView:
    """A breaker's ``state`` (``closed``, ``open``, or ``half_open``: open past its reset time, so the next call
    is the trial one), its consecutive ``failures``, when it opened and last changed (ISO 8601 UTC), the seconds
    until it tries again while open, its ``threshold`` and ``reset_seconds``, and how often it opened."""

    name: str
    state: str
    failures: int
    opened_at: str | None
    changed_at: str | None
    retry_in_seconds: float | None
    threshold: int | None
    reset_seconds: float | None
    opened_total: int

    def to_json(self) -> JsonObject:
        return {"name": self.name, "state": self.state, "failures": self.failures, "opened_at": self.opened_at,
                "changed_at": self.changed_at, "retry_in_seconds": self.retry_in_seconds,
                "threshold": self.threshold, "reset_seconds": self.reset_seconds, "opened_total": self.opened_total}


class Breakers:
    """``clock`` says how long an open breaker has left."""

    def __init__(self, client: redis.Redis, clock: Clock):
        self.client, self.clock = client, clock

    def views(self, now: float | None = None) -> list[BreakerView]:
        """Every breaker that has recorded something, by name, as of ``now`` (epoch seconds; default: the
        clock's)."""
        names = sorted(self.client.smembers(keys.BREAKERS))
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.breaker(name))
        now_ms = (self.clock.time() if now is None else now) * 1000
        result = []
        for name, raw in zip(names, pipe.execute(), strict=True):
            state = raw.get("state") or "closed"
            opened, reset = int_or_none(raw.get("opened_ms")), int_or_none(raw.get("reset_ms"))
            retry_in = None
            if state == "open" and opened is not None and reset is not None:
                retry_in = max(0.0, (opened + reset - now_ms) / 1000)
                state = "open" if retry_in > 0 else "half_open"
            result.append(BreakerView(
                name=name, state=state, failures=int_or_none(raw.get("failures")) or 0,
                opened_at=iso_from_epoch(opened / 1000) if opened else None,
                changed_at=iso_from_epoch(int(raw["changed_ms"]) / 1000) if raw.get("changed_ms") else None,
                retry_in_seconds=None if retry_in is None else round(retry_in, 3),
                threshold=int_or_none(raw.get("threshold")),
                reset_seconds=None if reset is None else reset / 1000,
                opened_total=int_or_none(raw.get("opened_total")) or 0,
            ))
        return result
