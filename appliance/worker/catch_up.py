"""A late slot and the next one: never both lost.

A *catch-up* is a slot run late: the latest slot missed while no worker ran, skipped during an outage, left by
a dead holder, or passed while the loop fell behind. Run as it comes, it can run into the job's next slot,
which would then find the job held and be skipped: two slots, one run, and the one that ran was the stale one.

The policy, the same on every replica:

- a catch-up that would start less than ``coalesce_window`` before the job's next slot does not run: it is
  **coalesced** into that slot (its ledger row says ``coalesced`` and names the slot that runs instead), and
  the next slot runs on its instant as usual;
- a catch-up that does run and is still running when the next slot comes makes that slot **wait** for it (on
  this worker, or on any replica through the ``catch_up`` flag of the run in ``appliance:running``), within the
  slot's grace, instead of being recorded ``skipped_locked``.

The window is the job's last run's duration (how long the catch-up is expected to take), at least
``COALESCE_AT_LEAST``: a job whose runs are short is caught up unless the next slot is imminent.
"""

from __future__ import annotations

import json
from datetime import datetime

import redis

from appliance.kernel.protocol import keys
from appliance.worker.dispatch import Dispatch

#: A scheduled slot dispatched this much after its instant is a catch-up (on time is CLAIM_LEAD before it).
CATCH_UP_LATENESS = 1.0
#: The least coalescing window, in seconds.
COALESCE_AT_LEAST = 1.0


def is_late(slot: datetime, now: datetime) -> bool:
    return (now - slot).total_seconds() > CATCH_UP_LATENESS


def coalesce_window(expected: float) -> float:
    return max(COALESCE_AT_LEAST, expected)


def coalesced_into(d: Dispatch, now: datetime, expected: float) -> datetime | None:
    """The job's next slot, when the catch-up ``d`` would start less than the window before it; else None."""
    if not (d.catch_up and d.scheduled and d.attempt == 1):
        return None
    following = d.job.schedule.next_after(d.slot)
    if following <= now:
        return None  # the next slot is due already: the loop's misfire policy has decided between them
    if (following - now).total_seconds() < coalesce_window(expected):
        return following
    return None


def expected_duration(durations: dict[str, float], client: redis.Redis, job: str) -> float:
    """Seconds the job's last run took: measured here, else the cluster's last run record, else 0."""
    if job in durations:
        return durations[job]
    try:
        record = client.hget(keys.LAST_RUN, job)
    except redis.RedisError:
        return 0.0
    if not record:
        return 0.0
    try:
        return float(json.loads(record).get("duration_ms") or 0) / 1000
    except (ValueError, TypeError, AttributeError):
        return 0.0
