"""Deterministic jitter: a slot starts at its nominal instant plus an offset that depends only on the job's name
and the slot, so every replica, every restart and ``appliance schedule plan`` compute the same start.

The offset is ``sha256(job, slot) mod jitter`` in milliseconds: spread evenly over ``[0, jitter)``, never the
same sequence for two jobs on the same schedule, and not a random draw a restart could change. The slot keeps
its nominal name everywhere (lease marker, fence, ledger key); the ledger records the planned start beside it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta


def jitter_offset(job: str, slot: datetime, jitter: float) -> float:
    """Seconds after ``slot`` at which ``job``'s run of it starts (0 without jitter); below ``jitter``."""
    span = int(jitter * 1000)
    if span <= 0:
        return 0.0
    key = f"{job}\x00{round(slot.timestamp() * 1000)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % span / 1000


def planned_start(job: str, slot: datetime, jitter: float) -> datetime:
    """The instant the run of ``slot`` starts: the nominal slot plus its jitter offset."""
    return slot + timedelta(seconds=jitter_offset(job, slot, jitter))
