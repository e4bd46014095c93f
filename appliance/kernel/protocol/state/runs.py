"""A run as the cluster state shows it: in progress (``appliance:running``, written when its lease is taken) and
finished (the job's history and last run, written by the FINISH script of ``appliance.kernel.protocol.locks``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.kernel.runtime.json_object import JsonObject


@dataclass(frozen=True)
class RunInProgress:
    """The run that holds a job's lease now; ``catch_up``: it runs a slot late (``appliance.worker.catch_up``)."""

    worker: str
    run_id: str
    slot: str
    started: str
    attempt: int
    trigger: str
    catch_up: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunInProgress:
        return cls(worker=data["worker"], run_id=data["run_id"], slot=data["slot"], started=data["started"],
                   attempt=data.get("attempt", 1), trigger=data.get("trigger", "schedule"),
                   catch_up=bool(data.get("catch_up")))

    def to_json(self) -> JsonObject:
        return {"worker": self.worker, "run_id": self.run_id, "slot": self.slot, "started": self.started,
                "attempt": self.attempt, "trigger": self.trigger, "catch_up": self.catch_up}


@dataclass(frozen=True)
class RunRecord:
    """One finished run as Redis keeps it; times are ISO 8601 UTC strings. ``summary`` is what the job returned
    (free-form JSON), ``by`` who asked for a manual run (absent for a slot of the schedule)."""

    job: str
    slot: str | None
    run_id: str
    attempt: int
    owner: str | None
    trigger: str
    worker: str | None
    started: str | None
    finished: str | None
    duration_ms: float | None
    outcome: str
    processed: int
    error: str | None
    fence: int | None
    summary: JsonObject | None
    by: str | None = None
    #: What a trigger gave the run (secrets masked); shown only when there were any.
    params: JsonObject | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        return cls(job=data["job"], slot=data.get("slot"), run_id=data["run_id"], attempt=data.get("attempt", 1),
                   owner=data.get("owner"), trigger=data.get("trigger", "schedule"), worker=data.get("worker"),
                   started=data.get("started"), finished=data.get("finished"), duration_ms=data.get("duration_ms"),
                   outcome=data["outcome"], processed=data.get("processed", 0), error=data.get("error"),
                   fence=data.get("fence"), summary=data.get("summary"), by=data.get("by"),
                   params=data.get("params"))

    def to_json(self) -> JsonObject:
        head = {"job": self.job, "slot": self.slot, "run_id": self.run_id, "attempt": self.attempt,
                "owner": self.owner, "trigger": self.trigger}
        if self.by is not None:
            head["by"] = self.by
        tail: JsonObject = {"params": self.params} if self.params is not None else {}
        return {**head, "worker": self.worker, "started": self.started, "finished": self.finished,
                "duration_ms": self.duration_ms, "outcome": self.outcome, "processed": self.processed,
                "error": self.error, "fence": self.fence, "summary": self.summary, **tail}
