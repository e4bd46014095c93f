"""``SlotJob``: a ``schedule.Job`` whose next run is the next wall-clock slot of its job's schedule.

``CLAIM_LEAD``: a slot is claimed this much before its instant (lease, fence, run record), so that its job body
starts on the instant itself: the claim's round trips and the GIL contention of several jobs due on the same
second are paid ahead of time instead of as lag.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import schedule

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.runtime.clock import Clock

CLAIM_LEAD = 0.05
#: The longest lead a herd's claim may get (``Lead``).
MAX_LEAD = 0.5
#: At most this many missed slots are written one by one after downtime (a 1 s job down for a day is 86,400).
MISSED_LIMIT = 100_000


class Lead:
    """How long before their instant the slots of one pass are claimed: ``CLAIM_LEAD``, plus twice what the last
    herd's claim took (``appliance.worker.herd``: one acquire, one statement, longer for a thousand slots than for
    ten), so that a herd of any size holds its leases and fences by its instant. The lead decays by a tenth per
    herd when claims get faster, and is at most ``MAX_LEAD``. A slot claimed while the run before it still holds
    its job tries again on its instant, whatever the lead."""

    def __init__(self) -> None:
        self.seconds = CLAIM_LEAD

    def measured(self, took: float) -> None:
        self.seconds = min(MAX_LEAD, max(CLAIM_LEAD + 2 * took, self.seconds * 0.9, CLAIM_LEAD))


class SlotJob(schedule.Job):
    """A ``schedule.Job`` whose next run is the next wall-clock slot of its ``Schedule``, in aware UTC.

    ``slot`` is the pending slot, ``start`` when its run starts (the slot plus its deterministic jitter:
    ``appliance.kernel.schedule.jitter``); ``next_run`` mirrors ``start`` (naive UTC) for the library's ordering.
    """

    def __init__(self, settings: JobSettings, scheduler: schedule.Scheduler, clock: Clock, first: datetime,
                 on_missed: Callable[[JobSettings, list[datetime]], None], lead: Lead | None = None):
        super().__init__(interval=1, scheduler=scheduler)
        self.lead = lead or Lead()
        self.unit = "seconds"
        self.settings = settings
        self.clock = clock
        self.slot = first
        self.start = settings.policy.start_of(settings.name, first)
        self.on_missed = on_missed
        self._started = False

    @property
    def should_run(self) -> bool:
        return self.clock.now() >= self.start - timedelta(seconds=self.lead.seconds)

    def _schedule_next_run(self) -> None:
        if self._started:
            self.slot = self._following(self.slot)
            self.start = self.settings.policy.start_of(self.settings.name, self.slot)
        self._started = True
        self.next_run = self.start.replace(tzinfo=None)

    def _following(self, previous: datetime) -> datetime:
        """The slot after ``previous``; when the loop fell behind, the newest slot still within grace runs
        once and the others are counted as missed."""
        sched = self.settings.schedule
        nxt = sched.next_after(previous)
        now = self.clock.now()
        if nxt > now:
            return nxt
        latest = sched.last_at_or_before(now) or nxt
        missed = slots_between(sched, previous, latest)
        if (now - latest).total_seconds() <= self.settings.grace:
            chosen = latest
        else:
            missed.append(latest)
            chosen = sched.next_after(now)
        if missed:
            self.on_missed(self.settings, missed)
        return chosen


def slots_between(sched, after: datetime, before: datetime) -> list[datetime]:
    """The slots strictly between ``after`` and ``before`` (at most ``MISSED_LIMIT``, the newest)."""
    found: list[datetime] = []
    probe = sched.next_after(after)
    while probe < before:
        found.append(probe)
        if len(found) > MISSED_LIMIT:
            del found[: len(found) - MISSED_LIMIT]
        probe = sched.next_after(probe)
    return found
