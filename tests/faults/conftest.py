"""A small cluster for fault tests: worker processes running ``tests.faults.jobs:effect`` against this test's
real redis-server and PostgreSQL, and readers of what happened (marks, effects, the ledger, ``appliance audit``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from appliance.kernel.protocol.db.migrate import migrate
from tests.faults.jobs import SCHEMA
from tests.services import PostgresServer, wait_until
from tests.worker.harness import REPO, WorkerProcess, worker_env, write_jobs_file

JOB = "effect"


@dataclass
class Cluster:
    tmp: Path
    app_env: dict[str, str]
    schedule: str = "5s"
    lock_ttl: float = 1.0
    #: The job every worker runs (as ``effect``): one of ``tests.faults.jobs``.
    callable: str = "tests.faults.jobs:effect"
    #: The names it runs under, each a job of its own with the same callable, schedule and lease TTL.
    names: tuple[str, ...] = (JOB,)
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def db(self) -> str:
        return self.app_env["DATABASE_URL"]

    def env(self, home: str | None = None, **extra: str) -> dict[str, str]:
        jobs = {name: {"callable": self.callable, "schedule": self.schedule, "lock_ttl": self.lock_ttl}
                for name in self.names}
        env = worker_env(self.app_env, write_jobs_file(self.tmp / "jobs.toml", jobs), list(self.names),
                         **{"JOB_RETRY_BACKOFF_MS": "200", **extra})
        if home:
            env["APPLIANCE_HOME"] = str(self.tmp / home)
        return env

    def start(self, home: str | None = None, **extra: str) -> WorkerProcess:
        worker = WorkerProcess(self.env(home, **extra), self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        worker.wait_for_log("worker started")
        return worker

    def start_together(self, *extras: dict[str, str]) -> list[WorkerProcess]:
        """One worker per environment in ``extras``, all started before any is waited for."""
        workers = [WorkerProcess(self.env(None, **extra), self.tmp / f"worker-{len(self.workers) + i}.log")
                   for i, extra in enumerate(extras)]
        self.workers += workers
        for worker in workers:
            worker.wait_for_log("worker started")
        return workers

    def sql(self, query: str, params=None) -> list[tuple]:
        with psycopg.connect(self.db, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def marks(self, step: str) -> list[tuple]:
        """(slot, run_id, pid) of every run that reached ``step``, oldest first."""
        return self.sql("SELECT slot, run_id, pid FROM fault_marks WHERE step = %s ORDER BY at", (step,))

    def wait_mark(self, step: str, count: int = 1, timeout: float = 20) -> list[tuple]:
        return wait_until(lambda: (m := self.marks(step)) and len(m) >= count and m, timeout, f"{count}x {step}")

    def effects(self, slot=None) -> list[tuple]:
        """(slot, run_id, fence, pid) of every committed effect."""
        if slot is None:
            return self.sql("SELECT slot, run_id, fence, pid FROM fault_effects ORDER BY at")
        return self.sql("SELECT slot, run_id, fence, pid FROM fault_effects WHERE slot = %s", (slot,))

    def slot_row(self, slot) -> tuple | None:
        rows = self.sql("SELECT outcome, run_id, reason FROM job_slots WHERE job = %s AND slot = %s", (JOB, slot))
        return rows[0] if rows else None

    def run_row(self, run_id: str) -> tuple:
        (row,) = self.sql("SELECT outcome, reason, committed_at IS NOT NULL FROM job_runs WHERE run_id = %s",
                          (run_id,))
        return row

    def audit(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
        """``appliance audit --json ARGS`` in the workers' environment plus ``env``."""
        result = subprocess.run([sys.executable, "-m", "appliance", "audit", "--json", *args],
                                env={**self.env(), **(env or {})}, cwd=REPO, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode in (0, 1), result.stderr
        return result.returncode, json.loads(result.stdout)

    def assert_audit_clean(self, since: str = "10m", until: str = "0s", env: dict[str, str] | None = None) -> dict:
        code, report = self.audit("--since", since, "--until", until, env=env)
        assert code == 0 and report["ok"], json.dumps(report["violations"], indent=1)
        return report

    def assert_audit_clean_through(self, last: datetime, grace: float) -> dict:
        """The audit up to ``last``, once its window reaches that far: a job's window ends lock TTL + grace +
        ``CLOCK_SKEW_WARN`` (1 s) before PostgreSQL's now. Slots after ``last``, which workers stopped since never
        reached, are not judged."""
        reach = last + timedelta(seconds=self.lock_ttl + grace + 1.0)
        wait_until(lambda: self.sql("SELECT now() > %s", (reach,))[0][0], self.lock_ttl + grace + 60,
                   f"the audit's window to reach {last.isoformat()}", interval=0.5)
        return self.assert_audit_clean(until=last.isoformat())

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.terminate()


def _cluster(tmp_path: Path, app_env: dict[str, str]) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, app_env)
    cluster.sql(SCHEMA)
    yield cluster
    for worker in cluster.workers:
        worker.kill()


@pytest.fixture
def cluster(tmp_path, app_env):
    """Workers on the session's shared PostgreSQL (fsync off for speed: never crash it)."""
    yield from _cluster(tmp_path, app_env)


@pytest.fixture
def durable_postgres():
    # Durable like the appliance's own cluster (the shared test cluster runs with fsync and synchronous
    # commit off for speed, and a crash there loses commits: fences would repeat).
    server = PostgresServer(("-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on")).start()
    yield server
    server.cleanup()


@pytest.fixture
def durable_cluster(tmp_path, app_env, durable_postgres):
    """Workers on a PostgreSQL of their own, durable, that the test may crash and restart."""
    url = durable_postgres.create_database("outage")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    yield from _cluster(tmp_path, {**app_env, "DATABASE_URL": url})
