"""Producing the state workers publish, with the same ``ClusterState`` methods, records and lease scripts they
use."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

import redis

from appliance.kernel.protocol import locks
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso, make_token, new_run_id
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.jobs import PublishedJob
from appliance.kernel.protocol.state.runs import RunInProgress, RunRecord
from appliance.kernel.protocol.state.workers import Beat
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.skew import Offset

ADMIN_TOKEN = "test-admin-token-0123456789"
JWT_SECRET = "test-jwt-secret-0123456789-abcdefghijklmnop"
HISTORY_LIMIT = 100


class Cluster:
    def __init__(self, client: redis.Redis, ledger: Ledger | None = None, clock: Clock = SYSTEM):
        self.r = client
        self.ledger = ledger
        self.clock = clock
        self.state = ClusterState(client, clock)
        self.scripts = locks.register(client)

    def publish(self, name: str, schedule: str = "30s", period: float = 30.0, timezone: str = "UTC",
                params: tuple[dict, ...] = ()) -> PublishedJob:
        """Publish one job's table entry, as a worker's heartbeat does (``params``: declared parameters)."""
        now = self.clock.time()
        job = PublishedJob(name=name, schedule=schedule, describe=f"every {schedule}", timezone=timezone,
                           period_seconds=period, lock_ttl=60.0, grace=period, max_retries=3, enabled=True,
                           description=f"test job {name}",
                           next_runs=tuple(iso_at(now + period * (i + 1)) for i in range(5)),
                           published_at=iso(self.clock.now()), params=params)
        self.state.jobs.publish([job])
        return job

    def beat(self, jobs: list[str], host: str | None = None, pid: int | None = None, ttl: float = 30.0,
             started: float | None = None, running: list[str] | None = None,
             clock_offset: float | None = None) -> str:
        """A heartbeat; by default from a worker on this host (the one beside the sidecar), with the clock offset
        it measured (seconds ahead of Redis' clock) when given."""
        host = host or socket.gethostname()
        pid = pid or os.getpid()
        worker = f"{host}:{pid}"
        beat = Beat(host=host, pid=pid, started=iso_at(started or self.clock.time()), beat_at=self.clock.time(),
                    ttl=ttl, version="test", jobs=tuple(sorted(jobs)), running=tuple(running or ()),
                    clock=None if clock_offset is None else Offset(clock_offset, 0.0002))
        self.state.workers.beat(worker, beat, ttl)
        return worker

    def start_run(self, job: str, trigger: str = "schedule", attempt: int = 1) -> dict[str, Any]:
        """Take ``lock:<job>`` as a run of this host does; returns the run in progress."""
        run_id = new_run_id()
        started = self.clock.now()
        token = make_token(run_id, started)
        worker = f"{socket.gethostname()}:{os.getpid()}"
        running = RunInProgress(worker, run_id, iso(started), iso(started), attempt, trigger).to_json()
        claim, _ = locks.acquire(self.scripts, job, token, 60.0, None, json.dumps(running))
        assert claim == locks.Claim.OK, claim
        if self.ledger is not None:
            self.ledger.start(job, started, trigger, run_id, token, worker, attempt, started)
        return {**running, "token": token, "t0": self.clock.monotonic()}

    def finish_run(self, job: str, run: dict[str, Any], outcome: str = "success", processed: int = 0,
                   error: str | None = None, success_at: float | None = None) -> dict[str, Any]:
        """Release the lease and record the run in one step (``locks.finish``); returns the run record."""
        record = RunRecord(job=job, slot=run["slot"], run_id=run["run_id"], attempt=run["attempt"],
                           owner=run["token"], trigger=run["trigger"], worker=run["worker"], started=run["started"],
                           finished=iso(self.clock.now()),
                           duration_ms=int((self.clock.monotonic() - run["t0"]) * 1000), outcome=outcome,
                           processed=processed, error=error, fence=None, summary=None).to_json()
        if outcome == "success" and success_at is None:
            success_at = self.clock.time()
        locks.finish(self.scripts, job, run["token"], json.dumps(record), outcome, None, HISTORY_LIMIT,
                     success_at, processed)
        if self.ledger is not None:
            final = Outcome(outcome)
            self.ledger.finish(run["run_id"], final, None, error, processed, None, record["duration_ms"], None)
        return record

    def run(self, job: str, outcome: str = "success", **kwargs: Any) -> dict[str, Any]:
        return self.finish_run(job, self.start_run(job), outcome, **kwargs)


def iso_at(epoch: float) -> str:
    return iso(datetime.fromtimestamp(epoch, UTC))
