"""What a job is: a name, a callable taking a ``RunContext``, and its default schedule and lease settings.

Built-in jobs declare a ``JobSpec``; custom jobs come from ``APPLIANCE_JOBS_FILE``. The configuration layer
turns specs plus environment overrides into ``JobSettings`` (see ``appliance.config.jobs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.kernel.contract.params import Param

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.kernel.contract.context import RunContext

JobFunc = Callable[["RunContext"], Any]
ScheduleDefault = str | Callable[["Config"], str]


@dataclass(frozen=True)
class JobSpec:
    """A built-in job.

    ``schedule`` is the default schedule text, or a function of the configuration (so that
    ``CALL_SCHEDULER_INTERVAL=45`` makes the call scheduler's default ``45s``). ``needs`` names the services
    the job uses (``"db"``, ``"qdrant"``); the worker waits for them and a run fails when they are down.
    ``lock_ttl``, ``max_retries`` and ``grace`` of None take the global defaults (``LOCK_TTL``,
    ``JOB_MAX_RETRIES``, one period). ``options``: the schedule policy's keys as a jobs file writes them
    (``overlap``, ``jitter``, ``calendar``, ``timeout``...: ``appliance.kernel.contract.policy``). ``params``:
    what a trigger may give the job (``ctx.params``; scheduled runs get the defaults), see
    ``appliance.kernel.contract.params``.
    """

    name: str
    func: JobFunc
    schedule: ScheduleDefault
    description: str = ""
    needs: tuple[str, ...] = ()
    lock_ttl: float | None = None
    max_retries: int | None = None
    grace: float | None = None
    timezone: str | None = None
    enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    params: tuple[Param, ...] = ()

    def default_schedule(self, config: Config) -> str:
        return self.schedule(config) if callable(self.schedule) else self.schedule
