"""``MAX_STARTS_PER_SECOND``: a fleet-wide budget of run starts, so that everything due on one instant (60 jobs
on ``0 * * * *``) does not start on the same millisecond on every replica.

Time is cut into ticks of ``1 / rate`` seconds; each tick holds one start, cluster-wide: a run that holds its
lease takes the first free tick at or after its planned start, and not before its claim (``SET
appliance:starts:<tick> NX``, all in one script), and starts its body then. A late run (a catch-up) is planned
for an instant that has passed: a tick of the past would start it at once, and the catch-ups of a burst missed
together (a restart, an outage) would all start at once. Ticks are taken only by runs that hold their slot's
lease, so each slot still runs once, and the ledger records the start it was given.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import redis

from appliance.kernel.protocol import keys

# KEYS[1] the tick prefix   ARGV[1] first tick   ARGV[2] ms a tick is kept   ARGV[3] ticks to try
# Returns the tick taken, or -1 when all were taken. The keys are made here from the prefix (standalone Redis).
RESERVE = """
for i = 0, tonumber(ARGV[3]) - 1 do
  local tick = tonumber(ARGV[1]) + i
  if redis.call('SET', KEYS[1] .. tick, '1', 'NX', 'PX', ARGV[2]) then return tick end
end
return -1
"""
#: Ticks tried at most: at 10 starts a second, a burst of 3,600 starts is spread over six minutes.
SEARCH = 3600


class StartBudget:
    def __init__(self, client: redis.Redis, rate: float):
        self.rate = rate
        self._reserve = client.register_script(RESERVE)

    def reserve(self, planned: datetime, now: datetime) -> datetime:
        """The start given to a run planned for ``planned`` and claimed at ``now``: the first free tick at or after
        both."""
        first = math.ceil(round(max(planned, now).timestamp() * self.rate, 6))
        keep_ms = int(max(60.0, SEARCH / self.rate) * 1000)
        tick = int(self._reserve(keys=[keys.STARTS], args=[first, keep_ms, SEARCH]))
        if tick < 0:
            return max(planned, now)
        return datetime.fromtimestamp(tick / self.rate, UTC)
