"""Clock skew: how far this process's wall clock is off the cluster's shared clock, Redis' ``TIME``.

Each worker computes its slots' instants from its own wall clock (docs/worker.md "Clocks"), so replicas whose
clocks disagree claim the same slot at different moments. The worker measures its offset at every heartbeat
with one ``TIME`` round trip: Redis read its clock somewhere between the send and the answer, so taking the
local wall time at the midpoint leaves an error of at most half the round trip (measured on the monotonic
clock, which a step of the wall clock does not move).

``offset`` is this clock minus the shared one: positive when this clock is ahead (it claims slots early),
negative when it is behind. A worker judges it against ``CLOCK_SKEW_WARN`` only on evidence: past the
threshold when even the most favourable reading within the error is past it, back when every reading is
within it; in between it keeps its last verdict, so a noisy round trip neither raises nor ends a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from appliance.kernel.runtime import metrics
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.logs import fields

log = logging.getLogger("appliance.worker.clock")


@dataclass(frozen=True)
class Offset:
    """This clock minus the shared clock (``seconds``), within ``error`` seconds either way."""

    seconds: float
    error: float

    def past(self, threshold: float) -> bool:
        """Surely further than ``threshold`` from the shared clock."""
        return abs(self.seconds) - self.error > threshold

    def within(self, threshold: float) -> bool:
        """Surely no further than ``threshold`` from the shared clock."""
        return abs(self.seconds) + self.error <= threshold

    def as_dict(self) -> dict[str, float]:
        return {"offset_seconds": round(self.seconds, 6), "error_seconds": round(self.error, 6)}


def measure(client: redis.Redis, clock: Clock = SYSTEM) -> Offset:
    """One ``TIME`` round trip: the offset of ``clock``'s wall time from Redis' clock."""
    wall, sent = clock.time(), clock.monotonic()
    seconds, micros = client.time()
    half = (clock.monotonic() - sent) / 2
    return Offset(wall + half - (int(seconds) + int(micros) / 1e6), half)


class SkewWatch:
    """The worker's view of its own clock: the last offset measured, the gauge, and one warning line when the
    offset passes ``threshold`` and one info line when it is back within it."""

    def __init__(self, client: redis.Redis, threshold: float, clock: Clock = SYSTEM):
        self.client, self.threshold, self.clock = client, threshold, clock
        self.skewed = False
        self._unsupported = False

    def check(self) -> Offset | None:
        """Measure once (on the heartbeat's thread and client); None when Redis refuses ``TIME``. A lost
        connection raises ``redis.ConnectionError``, as the heartbeat's other calls do."""
        if self._unsupported:
            return None
        try:
            offset = measure(self.client, self.clock)
        except redis.ResponseError as exc:  # TIME renamed or denied (an ACL without +time): nothing to measure
            self._unsupported = True
            log.warning("cannot measure this worker's clock offset: Redis refused TIME",
                        extra=fields(error=str(exc)))
            return None
        metrics.CLOCK_OFFSET.set(offset.seconds)
        self._judge(offset)
        return offset

    def _judge(self, offset: Offset) -> None:
        if not self.skewed and offset.past(self.threshold):
            self.skewed = True
            log.warning("CLOCK SKEW: this worker's clock is %+.3f s off Redis' clock (past CLOCK_SKEW_WARN=%gs): "
                        "it reaches every slot that much %s; see docs/worker.md \"Clocks\"", offset.seconds,
                        self.threshold, "early" if offset.seconds > 0 else "late", extra=fields(**offset.as_dict()))
        elif self.skewed and offset.within(self.threshold):
            self.skewed = False
            log.info("clock skew over: this worker's clock is within CLOCK_SKEW_WARN of Redis' clock",
                     extra=fields(**offset.as_dict(), threshold_seconds=self.threshold))
