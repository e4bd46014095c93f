"""What the loop hands to the runner, and what it gets back: one dispatch of one job, one attempt's result."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.state.triggers import Trigger


class Source(StrEnum):
    SCHEDULE = "schedule"  # a slot of the job's schedule (guarded by the per-slot marker)
    QUEUED = "queued"  # serve the oldest pending cluster trigger, taken only once the lease is ours
    DIRECT = "direct"  # a manual run started here: the CLI, or the retry of a manual run
    #: A slot of the past run on purpose (``appliance backfill``, or a pause's on-resume policy): under the lease
    #: and fence like any run, its effect committed at most once (``appliance_start_backfill``).
    BACKFILL = "backfill"


@dataclass(frozen=True)
class Request:
    """Why and by whom a run outside the schedule was asked for; for a queued trigger, the trigger itself (put
    back where it was if the run does not happen)."""

    reason: str
    by: str
    trigger: Trigger | None = None
    #: The backfill a ``Source.BACKFILL`` dispatch serves (``backfills.id``).
    backfill: str | None = None

    @classmethod
    def of(cls, trigger: Trigger) -> Request:
        return cls(trigger.reason, trigger.by, trigger)


@dataclass(frozen=True)
class Dispatch:
    """One dispatch: ``request`` is a manual run's request (``reason``, ``by``, and for a queued trigger its
    ``id`` and ``payload``); a scheduled slot has none."""

    job: JobSettings
    slot: datetime
    source: Source = Source.SCHEDULE
    attempt: int = 1
    request: Request | None = None
    #: A slot run late (after downtime, an outage, a dead holder or a loop that fell behind): coalesced into the
    #: next slot when it would run into it, and the next slot waits for it rather than being skipped.
    catch_up: bool = False
    #: A slot that waited for the run before it (its overlap policy decided so once; it keeps its place).
    waited: bool = False

    @property
    def start(self) -> datetime:
        """When the run starts: a scheduled slot's planned start (its jitter applied), else at once."""
        return self.job.policy.start_of(self.job.name, self.slot) if self.scheduled else self.slot

    @classmethod
    def manual(cls, job: JobSettings, at: datetime, reason: str, by: str) -> Dispatch:
        """A manual run started here (``appliance jobs run``, ``knowledge reindex``)."""
        return cls(job, at, Source.DIRECT, request=Request(reason, by))

    @property
    def scheduled(self) -> bool:
        return self.source is Source.SCHEDULE

    @property
    def reason(self) -> str:
        """What ``RunContext.trigger`` says: ``schedule``, or the manual run's reason."""
        if self.scheduled:
            return "schedule"
        return self.request.reason if self.request else "manual"

    @property
    def backfill(self) -> bool:
        return self.source is Source.BACKFILL

    def again(self, request: Request | None) -> Dispatch:
        """The retry of this dispatch; a served trigger is retried as the request it was."""
        source = Source.DIRECT if self.source is Source.QUEUED else self.source
        return replace(self, attempt=self.attempt + 1, source=source, request=request or self.request)


@dataclass
class Attempt:
    """What happened: ``claim`` is the lease answer; ``outcome`` is set when the job ran or was refused.

    ``unavailable`` names the service (``redis`` or ``postgres``) that kept the slot from running;
    ``request`` is the manual request the run served (a queued trigger, once taken).
    """

    claim: Claim | None
    outcome: Outcome | None = None
    error: str = ""
    holder_pttl: int = 0
    retry: bool = False
    request: Request | None = None
    unavailable: str = ""
    #: The job is held by the catch-up of an earlier slot, or its overlap policy buffers: this slot waits for
    #: the run before it instead of being skipped.
    wait: bool = False
