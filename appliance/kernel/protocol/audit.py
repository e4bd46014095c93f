"""The checker of the ledger: proves from PostgreSQL alone what the worker promises, over a window of time.

- ``overlap``: no two committed runs of a job overlap (a run's committed span is from its fence being
  issued to its effect committing, both read from PostgreSQL's clock under the job's fence row lock);
- ``fence_order``: fences only grow in commit order;
- ``double_effect``: no slot has more than one committed run (a scheduled run or a backfill's: ``SLOT_RUNS``);
- ``ledger_mismatch``: a slot recorded ``success`` has its committed run, and a committed run's slot says
  ``success``;
- ``unrecorded``: every expected slot of the schedule has exactly one ledger row (its outcome says what
  happened); slots before a job's first ledger row are not expected (the job did not exist yet). A UTC day whose
  old rows retention summarised (``job_slot_summaries``, ``appliance.kernel.protocol.retention``) is judged whole,
  by count: its rows and its summaries together must number its expected slots;
- ``calendar``: no scheduled run commits on a slot the calendars of the spec version it ran under exclude, and
  a slot recorded ``skipped_calendar`` is one that a version of the job's spec excludes
  (``appliance.kernel.protocol.exclusions``). Excluded slots are expected like the others, each with its
  ``skipped_calendar`` row (a missing one is ``unrecorded``, naming the calendar); the report counts them
  (``excluded``), so ``expected - excluded`` slots were due to run. A buffered slot (overlap ``buffer_one``,
  ``buffer_all``, ``cancel_other``) has one row, of the run that started when the one before ended or
  ``skipped_overlap``, and a coalesced one its ``coalesced`` row: both are accounted like any other;
- ``open``: no run started before the window's end is still recorded as running.

Slots newer than a job's lock TTL + grace may still be running or be caught up, so a job's window ends
there at the latest. Two clocks meet here (docs/worker.md "Clocks"): slots, and when runs started, are
workers' wall clock times; ``now`` is the shared clock's (``appliance audit`` reads PostgreSQL's). A worker
whose clock is ``skew`` seconds behind reaches each slot, and stamps each run's start, that much later, so
the window also ends ``skew`` earlier: a slot or run newer than that is not judged yet, not missing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import psycopg

from appliance.kernel.protocol.db.rows import one
from appliance.kernel.protocol.exclusions import Exclusions
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.json_object import JsonObject

#: Expected slots enumerated per job at most (a 1 s job over a day is 86,400).
SLOT_LIMIT = 1_000_000
#: The runs that complete a slot of the schedule: its own, and a backfill of it (``appliance backfill``).
SLOT_RUNS = ("schedule", "backfill")


class JobSettings(Protocol):
    """What the audit needs of a job's settings (``appliance.kernel.contract.catalog.JobSettings``, read-only)."""

    @property
    def name(self) -> str: ...

    @property
    def lock_ttl(self) -> float: ...

    @property
    def grace(self) -> float: ...

    @property
    def schedule(self) -> Any: ...


@dataclass(frozen=True)
class Violation:
    kind: str
    job: str
    detail: str
    slot: str | None = None


@dataclass(frozen=True)
class JobAudit:
    """What the audit counted of one job: the slots its schedule expects in the window and those the ledger
    recorded (by outcome), its committed runs, and where its window ends (ISO 8601 UTC)."""

    expected: int
    recorded: int
    outcomes: dict[str, int]
    committed_runs: int
    window_end: str
    #: Of the expected slots, those the job's calendars exclude (each to be recorded ``skipped_calendar``).
    excluded: int = 0

    def to_json(self) -> JsonObject:
        return {"expected": self.expected, "excluded": self.excluded, "recorded": self.recorded,
                "outcomes": self.outcomes, "committed_runs": self.committed_runs, "window_end": self.window_end}


@dataclass
class Report:
    since: datetime
    until: datetime
    jobs: dict[str, JobAudit] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    #: How far behind the shared clock a worker's clock may be (``CLOCK_SKEW_WARN``): allowed for.
    skew: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> JsonObject:
        return {"since": iso(self.since), "until": iso(self.until), "ok": self.ok,
                "jobs": {name: job.to_json() for name, job in self.jobs.items()},
                "clock_skew_allowed_seconds": self.skew, "violations": [asdict(v) for v in self.violations]}


def audit(conn: psycopg.Connection, jobs: Iterable[JobSettings], since: datetime, until: datetime,
          now: datetime, skew: float = 0.0) -> Report:
    """Check ``jobs`` over ``since`` .. ``until`` as of ``now`` on the shared clock, allowing for worker clocks
    up to ``skew`` seconds behind it."""
    report = Report(since, until, skew=skew)
    for job in jobs:
        end = min(until, now - timedelta(seconds=job.lock_ttl + job.grace + skew))
        _audit_job(conn, job, since, end, report)
    return report


def shared_now(conn: psycopg.Connection) -> datetime:
    """PostgreSQL's clock: the one the ledger stamps fences, commits and records with, whatever the clock of
    the host that runs the audit says."""
    return one(conn.execute("SELECT now()"))[0]


def _audit_job(conn: psycopg.Connection, job: JobSettings, since: datetime, end: datetime, report: Report) -> None:
    name = job.name
    slots = {slot: (outcome, run_id) for slot, outcome, run_id in conn.execute(
        "SELECT slot, outcome, run_id FROM job_slots WHERE job = %s AND slot >= %s AND slot <= %s",
        (name, since, end)).fetchall()}
    committed = conn.execute(
        "SELECT run_id, slot, trigger, fence, fence_issued_at, committed_at, commit_seq, lease_scope, spec_version "
        "FROM job_runs "
        "WHERE job = %(job)s AND committed_at IS NOT NULL AND ((trigger = ANY(%(slot_runs)s) AND slot BETWEEN "
        "%(since)s AND %(end)s) OR fence_issued_at BETWEEN %(since)s AND %(end)s) ORDER BY commit_seq",
        {"job": name, "since": since, "end": end, "slot_runs": list(SLOT_RUNS)}).fetchall()
    open_runs = conn.execute(
        "SELECT run_id, slot, started_at FROM job_runs WHERE job = %s AND outcome IN ('running', 'retrying') "
        "AND started_at >= %s AND started_at <= %s", (name, since, end)).fetchall()
    first = one(conn.execute(
        "SELECT least((SELECT min(slot) FROM job_slots WHERE job = %(job)s), "
        "(SELECT min(first_slot) FROM job_slot_summaries WHERE job = %(job)s))", {"job": name}))[0]
    expected = _expected(job, max(since, first) if first else None, end)
    summarised = _summaries(conn, name, since, end)
    violations = report.violations
    # Runs under a slot's own lease (overlap = allow, lease_scope 'slot') overlap other slots' by design: what
    # must hold for them holds per slot (fences growing among that slot's runs); the others hold the job's lease.
    violations += _check_commits(name, [row for row in committed if row[7] != "slot"])
    for slot_runs in _by_slot([row for row in committed if row[7] == "slot"]).values():
        violations += _check_commits(name, slot_runs)
    violations += _double_effects(name, committed)
    violations += _check_slots(name, slots, committed)
    exclusions = Exclusions.read(conn, job)
    excluded = {s: found for s in expected if exclusions.any and (found := exclusions.of(s))}
    violations += [Violation("unrecorded", name, "no ledger row for this slot" + (
                       f" (calendar {excluded[s][0]} excludes it: expected a skipped_calendar row)"
                       if s in excluded else ""), iso(s))
                   for s in expected if s not in slots and s.astimezone(UTC).date() not in summarised]
    if exclusions.any:
        violations += _check_calendars(name, exclusions, slots, committed)
    violations += _check_summarised(conn, job, summarised, first, end)
    violations += [Violation("open", name, f"run {run_id} started {iso(started)} is still recorded as running",
                             iso(slot)) for run_id, slot, started in open_runs]
    outcomes = Counter(outcome for outcome, _ in slots.values())
    for by_outcome in summarised.values():
        outcomes.update(by_outcome)
    report.jobs[name] = JobAudit(expected=len(expected), recorded=sum(outcomes.values()), outcomes=dict(outcomes),
                                 committed_runs=len(committed), window_end=iso(end),
                                 excluded=sum(1 for s in expected if s in excluded))


def _check_calendars(name: str, exclusions: Exclusions, slots: dict[datetime, tuple[str, str | None]],
                     committed: list[tuple]) -> list[Violation]:
    found: list[Violation] = []
    for run_id, slot, trigger, *_rest, version in committed:
        if trigger == "schedule" and (excluded := exclusions.under(version, slot)):
            found.append(Violation("calendar", name, f"calendar {excluded[0]} excludes this slot ({excluded[1]}) "
                                   f"under spec version {version}, but run {run_id} committed its effect", iso(slot)))
    for slot, (outcome, _run_id) in slots.items():
        if outcome == "skipped_calendar" and not exclusions.by_any(slot):
            found.append(Violation("calendar", name, "recorded skipped_calendar, but no version of the job's spec "
                                   "has a calendar that excludes it", iso(slot)))
    return found


def _summaries(conn: psycopg.Connection, name: str, since: datetime, end: datetime) -> dict[date, Counter[str]]:
    """The summarised slots of the window's UTC days, by day and outcome."""
    found: dict[date, Counter[str]] = defaultdict(Counter)
    if since > end:
        return found
    for day, outcome, count in conn.execute(
            "SELECT day, outcome, slots FROM job_slot_summaries WHERE job = %s AND day BETWEEN %s AND %s",
            (name, since.astimezone(UTC).date(), end.astimezone(UTC).date())).fetchall():
        found[day][outcome] += count
    return found


def _check_summarised(conn: psycopg.Connection, job: JobSettings, summarised: dict[date, Counter[str]],
                      first: datetime | None, end: datetime) -> list[Violation]:
    """Each summarised day, whole: its rows and its summaries number its expected slots."""
    found: list[Violation] = []
    for day, by_outcome in sorted(summarised.items()):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        last = min(start + timedelta(days=1) - timedelta(microseconds=1), end)
        expected = _expected(job, max(start, first) if first else start, last)
        (rows,) = one(conn.execute("SELECT count(*) FROM job_slots WHERE job = %s AND slot BETWEEN %s AND %s",
                                   (job.name, start, last)))
        total = rows + sum(by_outcome.values())
        if total != len(expected):
            found.append(Violation("unrecorded", job.name, f"{day}: {len(expected)} slots expected, {total} recorded "
                                   f"({rows} rows, {total - rows} summarised)"))
    return found


def _expected(job: JobSettings, start: datetime | None, end: datetime) -> list[datetime]:
    if start is None or start > end:
        return []
    found: list[datetime] = []
    slot = job.schedule.last_at_or_before(start)
    if slot is None or slot < start:
        slot = job.schedule.next_after(start)
    while slot <= end and len(found) < SLOT_LIMIT:
        found.append(slot)
        slot = job.schedule.next_after(slot)
    return found


def _by_slot(committed: list[tuple]) -> dict[datetime, list[tuple]]:
    found: dict[datetime, list[tuple]] = defaultdict(list)
    for row in committed:
        found[row[1] if row[2] in SLOT_RUNS else row[4]].append(row)
    return found


def _check_commits(name: str, committed: list[tuple]) -> list[Violation]:
    found: list[Violation] = []
    previous = None
    for run_id, slot, trigger, fence, issued, done, _seq, *_ in committed:
        if previous is not None:
            p_run, _p_slot, _p_trigger, p_fence, _p_issued, p_done, _ = previous
            if fence <= p_fence:
                found.append(Violation("fence_order", name, f"run {run_id} committed fence {fence} after run "
                                       f"{p_run} committed fence {p_fence}"))
            if issued < p_done:
                found.append(Violation("overlap", name, f"run {run_id} (fence issued {iso(issued)}) overlaps run "
                                       f"{p_run} (committed {iso(p_done)})"))
        previous = (run_id, slot, trigger, fence, issued, done, _seq)
    return found


def _double_effects(name: str, committed: list[tuple]) -> list[Violation]:
    per_slot: dict[datetime, list[str]] = defaultdict(list)
    for run_id, slot, trigger, *_ in committed:
        if trigger in SLOT_RUNS:
            per_slot[slot].append(run_id)
    return [Violation("double_effect", name, f"{len(runs)} committed runs: {', '.join(runs)}", iso(slot))
            for slot, runs in per_slot.items() if len(runs) > 1]


def _check_slots(name: str, slots: dict[datetime, tuple[str, str | None]], committed: list[tuple]) -> list[Violation]:
    found: list[Violation] = []
    by_slot = {slot: run_id for run_id, slot, trigger, *_ in committed if trigger in SLOT_RUNS}
    for slot, (outcome, run_id) in slots.items():
        if outcome == "success" and by_slot.get(slot) != run_id:
            found.append(Violation("ledger_mismatch", name, f"recorded success by run {run_id}, but the committed "
                                   f"run is {by_slot.get(slot)}", iso(slot)))
    for slot, run_id in by_slot.items():
        if slot in slots and slots[slot][0] != "success":
            found.append(Violation("ledger_mismatch", name, f"run {run_id} committed, but the slot is recorded "
                                   f"{slots[slot][0]}", iso(slot)))
    return found
