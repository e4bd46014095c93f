"""What the loop hands to the runner, and what it gets back: one dispatch of one job, one attempt's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.protocol.outcomes import Outcome


class Source(StrEnum):
    SCHEDULE = "schedule"  # a slot of the job's schedule (guarded by the per-slot marker)
    QUEUED = "queued"  # serve the oldest pending cluster trigger, taken only once the lease is ours
    DIRECT = "direct"  # a manual run started here: the CLI, or the retry of a manual run


@dataclass(frozen=True)
class Dispatch:
    """One dispatch: ``request`` is a manual run's request (``reason``, ``by``, and for a queued trigger its
    ``id`` and ``payload``); a scheduled slot has none."""

    job: JobSettings
    slot: datetime
    source: Source = Source.SCHEDULE
    attempt: int = 1
    request: Mapping[str, Any] | None = None
    #: A slot run late (after downtime, an outage, a dead holder or a loop that fell behind): coalesced into the
    #: next slot when it would run into it, and the next slot waits for it rather than being skipped.
    catch_up: bool = False

    @classmethod
    def manual(cls, job: JobSettings, at: datetime, reason: str, by: str) -> Dispatch:
        """A manual run started here (``appliance jobs run``, ``knowledge reindex``)."""
        return cls(job, at, Source.DIRECT, request={"reason": reason, "by": by})

    @property
    def scheduled(self) -> bool:
        return self.source is Source.SCHEDULE

    @property
    def reason(self) -> str:
        """What ``RunContext.trigger`` says: ``schedule``, or the manual run's reason."""
        if self.scheduled:
            return "schedule"
        return str((self.request or {}).get("reason") or "manual")

    def again(self, request: Mapping[str, Any] | None) -> Dispatch:
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
    request: Mapping[str, Any] | None = None
    unavailable: str = ""
    #: The job is held by the catch-up of an earlier slot: this slot waits for it instead of being skipped.
    wait: bool = False
