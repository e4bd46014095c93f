"""The ledger in PostgreSQL: every run from the moment it holds its lease, every slot with its final outcome.

The SQL lives in migration 0003 as functions, so each step is one statement and one round trip, atomic,
and serialized per job on the job's fence row:

- ``start``: a run that holds the lease gets its fencing number *before* its job body runs, closes what
  earlier holders left open (``abandoned``), and is recorded ``running``; a slot whose effect already
  committed is reported done and not run again.
- ``finish``: the run's outcome, and its slot's when final. A success is fenced: if a newer run took the
  job meanwhile it is recorded ``lease_lost`` and its slot is not marked done.
- ``record``: slots that did not run (skipped, paused, missed), in one batch.

A job that writes to PostgreSQL makes its effect exactly-once by calling
``appliance.kernel.protocol.fencing.complete_slot`` inside its own final transaction; for other jobs ``finish``
marks the slot done (at-least-once under crash).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import ConnectionPool

from appliance.kernel.protocol.db.rows import one
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.json_object import JsonObject

#: How long a ledger statement may wait for a pooled connection; PostgreSQL down must not hang a run.
CONNECT_WAIT = 2.0


@dataclass(frozen=True)
class SlotRecord:
    """A slot that ends without a run of its own (or with one whose end must be written later)."""

    job: str
    slot: datetime
    outcome: Outcome
    worker: str
    reason: str | None = None


@dataclass(frozen=True)
class CloseRuns:
    """Close the runs a stopping worker leaves open (``Ledger.close_worker``), after its other entries."""

    worker: str
    reason: str


@dataclass(frozen=True)
class Started:
    fence: int
    done: bool  # the slot's effect committed already: the run must not happen


@dataclass(frozen=True)
class UnfinishedRun:
    """A run the ledger still records ``running`` or ``retrying``: its holder may be alive, or gone."""

    job: str
    run_id: str
    owner: str | None
    worker: str
    slot: datetime
    outcome: str


@dataclass(frozen=True)
class HistoryEntry:
    """A run of the ledger, or a slot that did not run (``run_id`` null, ``reason`` why), in the run records'
    shape: times as ISO 8601 UTC strings; ``slot_outcome`` is the slot's final outcome where a run settled it;
    ``summary`` is what the job returned (free-form JSON)."""

    run_id: str | None
    job: str
    slot: str
    trigger: str
    attempt: int | None
    worker: str | None
    duration_ms: float | None
    outcome: str
    slot_outcome: str | None
    processed: int
    error: str | None
    fence: int | None
    summary: JsonObject | None
    reason: str | None
    started: str | None
    finished: str | None
    #: What a trigger gave the run (secrets masked); None for a run without parameters.
    params: JsonObject | None = None

    def to_json(self) -> JsonObject:
        return {"run_id": self.run_id, "job": self.job, "slot": self.slot, "trigger": self.trigger,
                "attempt": self.attempt, "worker": self.worker, "duration_ms": self.duration_ms,
                "outcome": self.outcome, "slot_outcome": self.slot_outcome, "processed": self.processed,
                "error": self.error, "fence": self.fence, "summary": self.summary, "reason": self.reason,
                "started": self.started, "finished": self.finished, "params": self.params}


class Ledger:
    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def ping(self) -> None:
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            conn.execute("SELECT 1")

    def start(self, job: str, slot: datetime, trigger: str, run_id: str, owner: str, worker: str,
              attempt: int, started: datetime, params: JsonObject | None = None) -> Started:
        """``params``: what a trigger gave the run (secrets masked), stored with it; one more statement, only
        for a run that has them."""
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            fence, done = one(conn.execute(
                "SELECT * FROM appliance_start_run(%s, %s, %s, %s, %s, %s, %s, %s)",
                (job, slot, trigger, run_id, owner, worker, attempt, started)))
            if params and not done:
                conn.execute("UPDATE job_runs SET params = %s WHERE run_id = %s", (json.dumps(params), run_id))
        return Started(int(fence), bool(done))

    def open(self, job: str, slot: datetime, trigger: str, run_id: str, owner: str, worker: str, attempt: int,
             started: datetime, planned: datetime | None, spec_version: int | None, per_slot: bool,
             params: JsonObject | None = None) -> Started:
        """``start`` that also records the planned start and the spec version; ``per_slot``: the run holds its
        slot's own lease and fence (overlap = allow), so runs of other slots stay open beside it (0006).
        ``params``: what a trigger gave the run (secrets masked), stored with it (one more statement, only for a
        run that has them)."""
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            fence, done = one(conn.execute(
                "SELECT * FROM appliance_open_run(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (job, slot, trigger, run_id, owner, worker, attempt, started, planned, spec_version, per_slot)))
            if params and not done:
                conn.execute("UPDATE job_runs SET params = %s WHERE run_id = %s", (json.dumps(params), run_id))
        return Started(int(fence), bool(done))
    def start_backfill(self, job: str, slot: datetime, run_id: str, owner: str, worker: str, attempt: int,
                       started: datetime) -> Started:
        """A backfill run of ``slot`` that holds the job's lease: its fence, or ``done`` when the slot's effect
        committed already (then nothing is recorded and the run must not happen)."""
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            fence, done = one(conn.execute("SELECT * FROM appliance_start_backfill(%s, %s, %s, %s, %s, %s, %s)",
                                           (job, slot, run_id, owner, worker, attempt, started)))
        return Started(int(fence or 0), bool(done))

    def finish(self, run_id: str, outcome: Outcome, slot_outcome: Outcome | None, error: str | None,
               processed: int, summary: JsonObject | None, duration_ms: float, reason: str | None,
               backfill: bool = False) -> Outcome:
        """Record the end of a run; returns the outcome recorded (a stale success becomes ``lease_lost``). A
        backfill run (``backfill``) completes its historical slot here and gives the slot's row its outcome."""
        function = "appliance_finish_backfill" if backfill else "appliance_finish_run"
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            (recorded,) = one(conn.execute(
                f"SELECT {function}(%s, %s, %s, %s, %s, %s, %s, %s)",
                (run_id, outcome.value, slot_outcome.value if slot_outcome else None, error, processed,
                 None if summary is None else json.dumps(summary), duration_ms, reason)))
        return Outcome(recorded) if recorded else outcome

    def record(self, records: Iterable[SlotRecord]) -> int:
        """Record slot outcomes in one statement; a slot keeps the highest-ranked outcome it was given."""
        rows = list(records)
        if not rows:
            return 0
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            conn.execute(
                "SELECT appliance_record_slot(j, s, o, NULL, NULL, w, r) FROM unnest("
                "%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::text[]) AS t(j, s, o, w, r)",
                ([r.job for r in rows], [r.slot for r in rows], [r.outcome.value for r in rows],
                 [r.worker for r in rows], [r.reason for r in rows]))
        return len(rows)

    def reconcile(self, job: str, worker: str, reason: str) -> int:
        """Close the open runs of ``job`` by ``worker`` (the caller checked that the worker is gone)."""
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            (closed,) = one(conn.execute("SELECT appliance_reconcile(%s, NULL, NULL, %s, %s)",
                                         (job, reason, worker)))
        return int(closed)

    def durability_problem(self) -> str | None:
        """The settings (of this pool's sessions) under which PostgreSQL may lose its last commits in a
        crash, and with them issued fences and ledger rows; None when commits are durable."""
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            settings = one(conn.execute("SELECT current_setting('fsync'), current_setting('synchronous_commit')"))
        unsafe = [f"{name}=off" for name, value in zip(("fsync", "synchronous_commit"), settings, strict=True)
                  if value == "off"]
        return ", ".join(unsafe) or None

    def close_worker(self, worker: str, reason: str) -> int:
        """Close every run ``worker`` left open (a retry it will not run, a run it could not end): its own
        stop, in one statement."""
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            (closed,) = one(conn.execute(
                "SELECT coalesce(sum(appliance_reconcile(job, NULL, NULL, %(reason)s, %(worker)s)), 0) FROM "
                "(SELECT DISTINCT job FROM job_runs WHERE worker = %(worker)s "
                "AND outcome IN ('running', 'retrying')) AS open", {"reason": reason, "worker": worker}))
        return int(closed)

    def open_runs(self, jobs: Iterable[str]) -> list[UnfinishedRun]:
        """Runs still recorded ``running`` or ``retrying`` (their holder may be alive, or gone)."""
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            cur = conn.execute(
                "SELECT job, run_id, owner, worker, slot, outcome FROM job_runs "
                "WHERE job = ANY(%s) AND outcome IN ('running', 'retrying') ORDER BY id", (list(jobs),))
            return [UnfinishedRun(*row) for row in cur.fetchall()]

    def last_slots(self, jobs: Iterable[str]) -> dict[str, tuple[datetime, Outcome]]:
        """The newest recorded slot of each job, and its outcome (the misfire policy starts from it)."""
        with self.pool.connection(timeout=CONNECT_WAIT) as conn:
            rows = conn.execute(
                "SELECT j, s.slot, s.outcome FROM unnest(%s::text[]) AS j CROSS JOIN LATERAL "
                "(SELECT slot, outcome FROM job_slots WHERE job = j ORDER BY slot DESC LIMIT 1) AS s",
                (list(jobs),)).fetchall()
        return {job: (slot, Outcome(outcome)) for job, slot, outcome in rows}


#: The newest runs, and the newest slots that did not run: those are read per job from the partial index of slots
#: without a run (job_slots_no_run, migration 0070), the jobs found by skipping from one to the next along it, so
#: a ledger whose every slot ran answers at once instead of reading every row looking for one.
_HISTORY = """
WITH RECURSIVE skipped AS (
    (SELECT job FROM job_slots WHERE run_id IS NULL AND (%(job)s::text IS NULL OR job = %(job)s) ORDER BY job LIMIT 1)
    UNION ALL
    SELECT (SELECT s.job FROM job_slots s WHERE s.run_id IS NULL AND s.job > k.job
              AND (%(job)s::text IS NULL OR s.job = %(job)s) ORDER BY s.job LIMIT 1)
    FROM skipped k WHERE k.job IS NOT NULL)
SELECT * FROM (
    (SELECT r.run_id, r.job, r.slot, r.trigger, r.attempt, r.worker, r.started_at, r.finished_at, r.duration_ms,
            r.outcome, s.outcome AS slot_outcome, r.processed, r.error, r.fence, r.summary, r.reason,
            r.params, r.started_at AS at
     FROM job_runs r
     LEFT JOIN job_slots s ON r.trigger IN ('schedule', 'backfill') AND s.job = r.job AND s.slot = r.slot
                           AND s.run_id = r.run_id
     WHERE %(job)s::text IS NULL OR r.job = %(job)s ORDER BY r.started_at DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT NULL, s.job, s.slot, 'schedule', NULL, s.worker, NULL, NULL, NULL, s.outcome, s.outcome, 0, NULL,
            s.fence, NULL, s.reason, NULL, s.slot
     FROM skipped k CROSS JOIN LATERAL (
         SELECT * FROM job_slots WHERE job = k.job AND run_id IS NULL ORDER BY slot DESC LIMIT %(limit)s) AS s
     ORDER BY s.slot DESC LIMIT %(limit)s)
) AS h ORDER BY at DESC LIMIT %(limit)s
"""


def read_history(conn, job: str | None = None, limit: int = 50) -> list[HistoryEntry]:
    """The newest runs and the slots that did not run, newest first."""
    cur = conn.execute(_HISTORY, {"job": job, "limit": limit})
    entries = []
    for (run_id, name, slot, trigger, attempt, worker, started, finished, duration_ms, outcome, slot_outcome,
         processed, error, fence, summary, reason, params, _at) in cur.fetchall():
        entries.append(HistoryEntry(
            run_id=run_id, job=name, slot=iso(slot), trigger=trigger, attempt=attempt, worker=worker,
            duration_ms=duration_ms, outcome=outcome, slot_outcome=slot_outcome, processed=processed, error=error,
            fence=fence, summary=summary, reason=reason, started=None if started is None else iso(started),
            finished=None if finished is None else iso(finished), params=params))
    return entries
