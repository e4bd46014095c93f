"""The job table workers publish (``appliance:jobs``), and each job as the cluster shows it now.

Every worker publishes the jobs it runs with each heartbeat; the CLI and the sidecar know a job by it (an
unknown name is ``NotFound``, naming the known ones).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from appliance.errors import NotFound
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.state.pauses import Pause
from appliance.kernel.protocol.state.runs import RunInProgress, RunRecord
from appliance.kernel.protocol.state.stored import iso_from_epoch, loads
from appliance.kernel.runtime.json_object import JsonObject


@dataclass(frozen=True)
class PublishedJob:
    """A job as a worker publishes it: its settings, its schedule (``schedule``, and ``describe`` in words) and
    its next five runs (ISO 8601 UTC), and who published it when."""

    name: str
    schedule: str | None = None
    describe: str | None = None
    timezone: str | None = None
    period_seconds: float | None = None
    lock_ttl: float | None = None
    grace: float | None = None
    max_retries: int | None = None
    enabled: bool = True
    description: str | None = None
    next_runs: tuple[str, ...] = ()
    published_by: str | None = None
    published_at: str | None = None
    #: The schedule policy (overlap, max_concurrent, jitter, timeout, isolation, calendars' names), the effective
    #: spec it belongs to (``appliance.kernel.contract.spec``: the sidecar plans from it) and its stored version.
    policy: JsonObject | None = None
    spec: JsonObject | None = None
    spec_version: int | None = None
    #: The declared parameters (``appliance.kernel.contract.params.Param.to_json``), checked where a trigger is made.
    params: tuple[JsonObject, ...] = ()

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> PublishedJob:
        return cls(name=name, schedule=data.get("schedule"), describe=data.get("describe"),
                   timezone=data.get("timezone"), period_seconds=data.get("period_seconds"),
                   lock_ttl=data.get("lock_ttl"), grace=data.get("grace"), max_retries=data.get("max_retries"),
                   enabled=data.get("enabled", True), description=data.get("description"),
                   next_runs=tuple(data.get("next_runs") or ()), published_by=data.get("published_by"),
                   published_at=data.get("published_at"), policy=data.get("policy"), spec=data.get("spec"),
                   spec_version=data.get("spec_version"), params=tuple(data.get("params") or ()))

    def to_json(self) -> JsonObject:
        return {"name": self.name, "schedule": self.schedule, "describe": self.describe, "timezone": self.timezone,
                "period_seconds": self.period_seconds, "lock_ttl": self.lock_ttl, "grace": self.grace,
                "max_retries": self.max_retries, "enabled": self.enabled, "description": self.description,
                "next_runs": list(self.next_runs), "published_by": self.published_by,
                "published_at": self.published_at, "policy": self.policy, "spec": self.spec,
                "spec_version": self.spec_version, "params": list(self.params)}


@dataclass(frozen=True)
class JobView:
    """A published job with what the cluster says of it now: paused (and by whom), the run in progress, the
    last run, the last success (ISO 8601 UTC) and the owner token of its lease's holder."""

    published: PublishedJob
    paused: bool
    paused_by: str | None
    running: RunInProgress | None
    last_run: RunRecord | None
    last_success: str | None
    lease_holder: str | None
    #: The job's own pause (who, when, why, until when, on-resume), None when not paused one by one.
    pause: Pause | None = None

    @property
    def name(self) -> str:
        return self.published.name

    @property
    def next_run(self) -> str | None:
        return self.published.next_runs[0] if self.published.next_runs else None

    def to_json(self) -> JsonObject:
        # ``lock_holder``: the holder of ``lock:<job>``, the key's name in seed 004's runbook.
        return {**self.published.to_json(), "paused": self.paused, "paused_by": self.paused_by,
                "running": self.running.to_json() if self.running else None,
                "last_run": self.last_run.to_json() if self.last_run else None,
                "last_success": self.last_success, "lock_holder": self.lease_holder,
                "pause": self.pause.to_json() if self.pause else None}


class JobTable:
    def __init__(self, client: redis.Redis):
        self.client = client

    def publish(self, jobs: Iterable[PublishedJob]) -> None:
        """Workers publish their job table (schedule, description, settings, next runs)."""
        table = {job.name: json.dumps(job.to_json()) for job in jobs}
        if table:
            self.client.hset(keys.JOBS, mapping=table)

    def names(self) -> list[str]:
        return sorted(self.client.hkeys(keys.JOBS))

    def require(self, job: str) -> None:
        if not self.client.hexists(keys.JOBS, job):
            raise NotFound(f"unknown job {job!r}; known jobs: {', '.join(self.names()) or 'none published yet'}")

    def published(self, job: str) -> PublishedJob:
        """``job`` as a worker published it; ``NotFound`` naming the known jobs."""
        found = loads(self.client.hget(keys.JOBS, job))
        if not found:
            self.require(job)
        return PublishedJob.from_json(job, found or {})

    def views(self) -> list[JobView]:
        """Every published job with its pause state, run in progress, last run, lease holder, by name."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.JOBS)
        pipe.hgetall(keys.PAUSED)
        pipe.hgetall(keys.RUNNING)
        pipe.hgetall(keys.LAST_RUN)
        pipe.hgetall(keys.LAST_SUCCESS)
        published, paused, running, last, success = pipe.execute()
        names = sorted(published)
        holders = self.client.mget([keys.lock(n) for n in names]) if names else []
        result = []
        for name, holder in zip(names, holders, strict=True):
            pause, run, last_run = loads(paused.get(name)), loads(running.get(name)), loads(last.get(name))
            last_success = success.get(name)
            result.append(JobView(
                published=PublishedJob.from_json(name, loads(published[name]) or {}),
                paused=name in paused,
                paused_by=Pause.from_json(pause).by if pause else None,
                running=RunInProgress.from_json(run) if run else None,
                last_run=RunRecord.from_json(last_run) if last_run else None,
                last_success=iso_from_epoch(float(last_success)) if last_success else None,
                lease_holder=holder,
                pause=Pause.from_json(pause) if pause else None,
            ))
        return result
