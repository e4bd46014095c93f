"""Backfills: slots of the past run on purpose, planned from the ledger first.

``plan`` reads the ledger over a window and says, slot by slot, which will run and which will not, and why: a
slot whose effect committed already (its row says ``success``, or a run of it committed) is never run again; a
slot newer than the job's lock TTL + grace (+ ``CLOCK_SKEW_WARN``) is left to the live schedule, which may still
run or take it over; ``--only`` picks among the rest (``missing``: no row, or a row saying it never ran;
``failed``: it ran and nothing committed; ``all``: both). ``create`` stores a plan (``backfills``,
``backfill_slots``); workers ``claim`` its slots one at a time (``FOR UPDATE SKIP LOCKED``) and run each under
the job's lease and fence (``appliance_start_backfill``), so a slot's effect commits at most once, whatever
number of backfills and replicas are at it. ``progress`` is what the CLI's progress bar and the API show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg

from appliance.errors import ApplianceError
from appliance.kernel.protocol.owner import iso, new_run_id
from appliance.kernel.runtime.json_object import JsonObject

SELECTIONS = ("missing", "failed", "all")
#: Rows that say the slot never ran (or no row at all): ``--only missing``.
NEVER_RAN = frozenset({"missed", "skipped_unavailable", "skipped_locked", "coalesced", "paused"})
#: Rows that say it ran and nothing committed: ``--only failed``.
RAN_AND_FAILED = frozenset({"failed", "dead_lettered", "abandoned", "cancelled", "lease_lost"})
#: A plan of more slots than this needs ``--force`` (a typo in ``--from`` should not start a year of runs).
FORCE_ABOVE = 10_000
#: No plan holds more slots than this, forced or not.
AT_MOST = 1_000_000


class BackfillRefused(ApplianceError):
    """A backfill that cannot be planned as asked (bad window, unknown selection, too many slots): exit 2, 400."""


class JobLike(Protocol):
    """What planning needs of a job: its name, schedule (``next_after``) and lease settings."""

    @property
    def name(self) -> str: ...

    @property
    def lock_ttl(self) -> float: ...

    @property
    def grace(self) -> float: ...

    @property
    def schedule(self) -> Any: ...


@dataclass(frozen=True)
class Skipped:
    """A slot of the window the backfill will not run: its ledger row's outcome (None: no row) and why."""

    slot: str
    outcome: str | None
    why: str

    def to_json(self) -> JsonObject:
        return {"slot": self.slot, "outcome": self.outcome, "why": self.why}


@dataclass(frozen=True)
class Plan:
    """What a backfill of ``job`` over ``since`` .. ``until`` will run (``run``: ISO slots, oldest first, each
    with the row it has now) and will not (``skip``)."""

    job: str
    since: datetime
    until: datetime
    selection: str
    max_parallel: int
    horizon: datetime
    run: tuple[tuple[str, str | None], ...] = ()
    skip: tuple[Skipped, ...] = ()

    def to_json(self) -> JsonObject:
        return {"job": self.job, "from": iso(self.since), "to": iso(self.until), "only": self.selection,
                "max_parallel": self.max_parallel, "live_after": iso(self.horizon),
                "will_run": [{"slot": slot, "outcome": outcome} for slot, outcome in self.run],
                "will_not_run": [s.to_json() for s in self.skip],
                "counts": {"run": len(self.run), "not_run": len(self.skip)}}


def check_request(since: datetime, until: datetime, selection: str, max_parallel: int) -> None:
    if until <= since:
        raise BackfillRefused(f"--to ({iso(until)}) must be after --from ({iso(since)})")
    if selection not in SELECTIONS:
        raise BackfillRefused(f"--only must be one of {', '.join(SELECTIONS)}, not {selection!r}")
    if not 1 <= max_parallel <= 64:
        raise BackfillRefused(f"--max-parallel must be from 1 to 64, not {max_parallel}")


def slots_in(job: JobLike, since: datetime, until: datetime, force: bool) -> list[datetime]:
    """The schedule's slots from ``since`` up to ``until`` (both included); refused past ``FORCE_ABOVE`` without
    ``force``, and past ``AT_MOST`` always, before any is stored."""
    limit = AT_MOST if force else FORCE_ABOVE
    found: list[datetime] = []
    slot = job.schedule.last_at_or_before(since)
    if slot is None or slot < since:
        slot = job.schedule.next_after(since)
    while slot <= until:
        if len(found) >= limit:
            if force:
                raise BackfillRefused(f"the window holds more than {AT_MOST:,} slots of {job.name}: backfill a "
                                      "shorter window")
            raise BackfillRefused(f"the window holds more than {FORCE_ABOVE:,} slots of {job.name}: pass --force "
                                  f"(\"force\": true) to backfill up to {AT_MOST:,}, or a shorter window")
        found.append(slot)
        slot = job.schedule.next_after(slot)
    return found


def plan(conn: psycopg.Connection, job: JobLike, since: datetime, until: datetime, selection: str = "missing",
         max_parallel: int = 1, now: datetime | None = None, skew: float = 0.0, force: bool = False) -> Plan:
    """The plan of a backfill, read from the ledger (``now``: PostgreSQL's clock by default)."""
    check_request(since, until, selection, max_parallel)
    now = now or conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    horizon = now - timedelta(seconds=job.lock_ttl + job.grace + skew)
    slots = slots_in(job, since, until, force)
    rows: dict[datetime, str] = dict(conn.execute(
        "SELECT slot, outcome FROM job_slots WHERE job = %s AND slot BETWEEN %s AND %s",
        (job.name, since, until)).fetchall())
    committed: dict[datetime, str] = dict(conn.execute(
        "SELECT slot, min(run_id) FROM job_runs WHERE job = %s AND slot BETWEEN %s AND %s AND committed_at IS NOT "
        "NULL AND trigger IN ('schedule', 'backfill') GROUP BY slot", (job.name, since, until)).fetchall())
    wanted = {"missing": NEVER_RAN, "failed": RAN_AND_FAILED, "all": NEVER_RAN | RAN_AND_FAILED}[selection]
    run, skip = [], []
    for slot in slots:
        outcome = rows.get(slot)
        if slot > horizon:
            skip.append(Skipped(iso(slot), outcome, "left to the live schedule: newer than the job's lock TTL + "
                                                    "grace, it may still run or be taken over"))
        elif outcome == "success" or slot in committed:
            by = f" by run {committed[slot]}" if slot in committed else ""
            skip.append(Skipped(iso(slot), outcome, f"already committed{by}: a slot's effect commits once"))
        elif (outcome is None and selection != "failed") or outcome in wanted:
            run.append((iso(slot), outcome))
        else:
            skip.append(Skipped(iso(slot), outcome, f"not chosen: its row says {outcome or 'nothing'} "
                                                    f"(--only {selection})"))
    return Plan(job.name, since, until, selection, max_parallel, horizon, tuple(run), tuple(skip))


# -- the store workers claim from --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimedSlot:
    backfill: str
    job: str
    slot: datetime
    actor: str


@dataclass
class Progress:
    """A backfill's slots by state: ``planned`` (waiting), ``claimed`` (running), ``done`` (its run ended:
    ``outcomes``), ``committed`` (found committed already when claimed)."""

    id: str
    job: str
    total: int
    states: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.states.get("done", 0) + self.states.get("committed", 0)

    @property
    def complete(self) -> bool:
        return self.finished >= self.total

    def to_json(self) -> JsonObject:
        return {"id": self.id, "job": self.job, "total": self.total, "finished": self.finished,
                "complete": self.complete, "states": self.states, "outcomes": self.outcomes}


def create(conn: psycopg.Connection, plan: Plan, actor: str, reason: str | None = None) -> str:
    """Store ``plan`` for the workers; returns the backfill's id. ``conn`` in autocommit mode or not: one
    transaction either way."""
    return create_for(conn, plan.job, [datetime.fromisoformat(s.replace("Z", "+00:00")) for s, _ in plan.run],
                      actor, reason, plan.selection, plan.max_parallel, plan.since, plan.until)


def create_for(conn: psycopg.Connection, job: str, slots: Iterable[datetime], actor: str, reason: str | None,
               selection: str, max_parallel: int = 1, since: datetime | None = None,
               until: datetime | None = None) -> str:
    """A backfill of exactly ``slots`` (a pause's on-resume policy chooses them itself)."""
    chosen = sorted(slots)
    ident = new_run_id()
    low = since or (chosen[0] if chosen else None)
    high = until or (chosen[-1] if chosen else None)
    with conn.transaction():
        conn.execute("INSERT INTO backfills (id, job, from_at, to_at, selection, max_parallel, actor, reason) "
                     "VALUES (%s, %s, coalesce(%s, now()), coalesce(%s, now()), %s, %s, %s, %s)",
                     (ident, job, low, high, selection, max_parallel, actor, reason))
        conn.execute("INSERT INTO backfill_slots (backfill_id, job, slot) SELECT %s, %s, s FROM "
                     "unnest(%s::timestamptz[]) AS s", (ident, job, chosen))
    return ident


def progress(conn: psycopg.Connection, ident: str) -> Progress | None:
    row = conn.execute("SELECT job FROM backfills WHERE id = %s", (ident,)).fetchone()
    if row is None:
        return None
    states: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for state, outcome, count in conn.execute(
            "SELECT state, outcome, count(*) FROM backfill_slots WHERE backfill_id = %s GROUP BY state, outcome",
            (ident,)).fetchall():
        states[state] += count
        if outcome:
            outcomes[outcome] += count
    return Progress(ident, row[0], sum(states.values()), dict(states), dict(outcomes))


_CLAIM = """
WITH chosen AS (
    SELECT b.id FROM backfills b
    WHERE b.job = ANY(%(jobs)s)
      AND EXISTS (SELECT 1 FROM backfill_slots p WHERE p.backfill_id = b.id AND p.state = 'planned')
      AND (SELECT count(*) FROM backfill_slots c WHERE c.backfill_id = b.id AND c.state = 'claimed') < b.max_parallel
    ORDER BY b.created_at LIMIT 1
    FOR UPDATE SKIP LOCKED),
next_slot AS (
    SELECT s.backfill_id, s.slot FROM backfill_slots s JOIN chosen ON s.backfill_id = chosen.id
    WHERE s.state = 'planned' ORDER BY s.slot LIMIT 1
    FOR UPDATE OF s SKIP LOCKED)
UPDATE backfill_slots u SET state = 'claimed', worker = %(worker)s, claimed_at = clock_timestamp()
FROM next_slot WHERE u.backfill_id = next_slot.backfill_id AND u.slot = next_slot.slot
RETURNING u.backfill_id, u.job, u.slot, (SELECT actor FROM backfills WHERE id = u.backfill_id)
"""


def claim(conn: psycopg.Connection, jobs: Iterable[str], worker: str) -> ClaimedSlot | None:
    """The oldest planned slot of ``jobs`` (oldest backfill first), claimed by ``worker``; None when there is
    none or its backfill already runs ``max_parallel`` slots. The backfill's row is locked while claiming (another
    claimer skips that backfill meanwhile), so that bound holds across replicas."""
    row = conn.execute(_CLAIM, {"worker": worker, "jobs": list(jobs)}).fetchone()
    return ClaimedSlot(*row) if row else None


def with_planned(conn: psycopg.Connection, jobs: Iterable[str]) -> list[str]:
    """Those of ``jobs`` that have a planned backfill slot, oldest backfill first (what ``claim`` looks for)."""
    rows = conn.execute(
        "SELECT b.job FROM backfills b WHERE b.job = ANY(%s) AND EXISTS (SELECT 1 FROM backfill_slots p "
        "WHERE p.backfill_id = b.id AND p.state = 'planned') GROUP BY b.job ORDER BY min(b.created_at)",
        (list(jobs),)).fetchall()
    return [job for (job,) in rows]


def settle(conn: psycopg.Connection, ident: str, slot: datetime, state: str, outcome: str | None) -> None:
    """A claimed slot ends: ``done`` with the outcome its run recorded, ``committed`` (found committed already),
    or back to ``planned`` (the lease was busy, a service down: claimed again later)."""
    if state == "planned":
        conn.execute("UPDATE backfill_slots SET state = 'planned', worker = NULL, claimed_at = NULL "
                     "WHERE backfill_id = %s AND slot = %s AND state = 'claimed'", (ident, slot))
    else:
        conn.execute("UPDATE backfill_slots SET state = %s, outcome = %s, finished_at = clock_timestamp() "
                     "WHERE backfill_id = %s AND slot = %s", (state, outcome, ident, slot))


def reclaim(conn: psycopg.Connection, live_workers: Iterable[str]) -> int:
    """Slots claimed by workers that are gone (no heartbeat) are planned again: their runs, if any, were closed
    by the ledger (abandoned) and the slot's effect, if it committed, makes the next run of it stop at its start."""
    return conn.execute("UPDATE backfill_slots SET state = 'planned', worker = NULL, claimed_at = NULL "
                        "WHERE state = 'claimed' AND NOT (worker = ANY(%s))", (list(live_workers),)).rowcount
