"""Each job's recent runs in Redis, and the cluster-wide counters.

A run's record is written once, by the FINISH script (``appliance.kernel.protocol.locks``), into the job's
history list and its last run; the ledger in PostgreSQL has every run, this is what stays readable while
PostgreSQL is down. The counters ``<job>:<outcome>`` count runs and unrun slots by outcome; ``<job>:processed``
the items runs processed; ``<job>:lease_lost`` every run that lost its lease, whatever outcome it was
recorded with (docs/worker.md); ``<job>:dead_letter`` the runs moved to the dead letters.
"""

from __future__ import annotations

import json

import redis

from appliance.kernel.protocol import keys
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.state.jobs import JobTable
from appliance.kernel.protocol.state.runs import RunRecord


class History:
    def __init__(self, client: redis.Redis, jobs: JobTable):
        self.client, self.jobs = client, jobs

    def runs(self, job: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The most recent runs, newest first, of one job or of all jobs."""
        if job:
            self.jobs.require(job)
        names = [job] if job else self.jobs.names()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.lrange(keys.history(name), 0, limit - 1)
        runs = [RunRecord.from_json(json.loads(item)) for items in pipe.execute() for item in items]
        runs.sort(key=lambda run: run.started or "", reverse=True)
        return runs[:limit]

    def counts(self) -> dict[str, int]:
        """Counters ``<job>:<outcome>``, ``<job>:processed`` and ``<job>:lease_lost`` since the Redis was
        created."""
        return {k: int(v) for k, v in self.client.hgetall(keys.COUNTS).items()}

    def count(self, job: str, outcome: str, n: int = 1) -> None:
        self.client.hincrby(keys.COUNTS, f"{job}:{outcome}", n)

    def count_lease_lost(self, job: str, recorded: Outcome) -> None:
        """A run of ``job`` lost its lease. The FINISH script counts a run by its recorded outcome, so a run
        recorded ``lease_lost`` is counted there already; one recorded otherwise (a success committed before it
        noticed, a failure) is counted here, so ``<job>:lease_lost`` counts each such run once."""
        if recorded is not Outcome.LEASE_LOST:
            self.count(job, Outcome.LEASE_LOST.value)
