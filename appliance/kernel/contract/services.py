"""What a pack may ask of the appliance while it runs, beyond its jobs: run a job once now, in this process, under
its lease and fence (``appliance knowledge reindex``), and trigger a job on the cluster (``seed-demo --trigger``).

Running a job needs the worker's runner, which lives above the kernel: the processes provide it (``provide``;
``appliance.cli`` does before any command runs), and a pack reaches it here without importing a process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.config import Config
from appliance.kernel.contract.catalog import Jobs
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime.clients import make_redis


@dataclass(frozen=True)
class RunOutcome:
    """What one run asked for by ``run_once`` did. ``ran`` is False when the job was running elsewhere (its lease
    was held) and nothing ran here; ``outcome`` is the ledger's word for the run (``success``, ``failure``...)."""

    ran: bool
    outcome: str | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.ran and self.outcome == Outcome.SUCCESS


class OnceRunner(Protocol):
    def __call__(self, config: Config, jobs: Jobs, job: str, reason: str, by: str,
                 services: Mapping[str, Any]) -> RunOutcome: ...


_provided: list[OnceRunner] = []


def provide(runner: OnceRunner) -> None:
    """Called by the processes: the runner ``run_once`` uses."""
    _provided[:] = [runner]


def run_once(config: Config, jobs: Jobs, job: str, *, reason: str, by: str,
             services: Mapping[str, Any] | None = None) -> RunOutcome:
    """Run ``job`` once now in this process, as the worker would run a manual trigger (lease, fence, ledger row,
    retries none); ``services`` are added to the run's ``ctx.services``. Raises ``KeyError`` for an unknown job."""
    if not _provided:
        raise RuntimeError("no runner provided: run_once is available to the appliance's commands")
    jobs.job(job)
    return _provided[0](config, jobs, job, reason, by, services or {})


def trigger_job(config: Config, job: str, *, by: str, reason: str) -> None:
    """Ask the cluster to run ``job`` once now (the same as ``appliance jobs trigger``): a worker that runs it
    takes the trigger. Raises ``NotFound`` when no worker has published the job, ``redis.RedisError`` when
    Redis cannot be reached."""
    client = make_redis(config.core.redis_url)
    try:
        ClusterState(client).triggers.request(job, by, reason=reason)
    finally:
        client.close()
