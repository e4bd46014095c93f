"""Ledger benchmark: the reads of the ledger and the worker's two statements per slot on a ledger of
``BENCH_LEDGER_ROWS`` slot rows (default 50,000,000: 10 jobs every second for 58 days; a year is 315 million).

Starts its own PostgreSQL in a temp dir (removed at the end) and loads it server side with
``INSERT ... SELECT generate_series(...)``: 10 jobs due every second back from now, one run row per slot that
ran (98% success, 1% failed, 1% skipped_locked with no run; job-09 a healthy job whose every slot succeeded), in
time order as a worker writes them. Run ids are
12 hex digits as the worker's, random in front and unique (48 random bits would repeat among 50 million). The tables
are made by the kernel's migrations up to ``BENCH_LEDGER_BASE`` (default: every one); their indexes are dropped
for the load and rebuilt after it (as a restore does), then ANALYZE. Each figure is p50 / p99 over
``BENCH_LEDGER_REPEAT`` (default 20) repetitions of what the appliance runs:

- ``audit --since 24h``: ``appliance.kernel.protocol.audit.audit`` for the 10 jobs (as the CLI calls it), and for
  one (``--job``);
- ``jobs history``: ``read_history`` of all jobs and of one (20 rows, the CLI's default), and ``/api/history``'s
  (50 rows, ``SIDECAR_HISTORY_LIMIT``'s default);
- the dashboard's timeline: ``appliance.sidecar.timeline``'s two queries over 6 h (its default) and 48 h (its most);
- the worker's statements per slot: ``Ledger.open`` and ``Ledger.finish`` (``appliance_open_run``,
  ``appliance_finish_run``) on this ledger and on an empty one in the same cluster, side by side.

When migrations newer than ``BENCH_LEDGER_BASE`` exist, the figures are taken, those migrations are applied to
the loaded ledger (timed) and the figures are taken again (only then with ``BENCH_LEDGER_BASE_FIGURES=0``).
``BENCH_LEDGER_EXPLAIN=1`` prints EXPLAIN (ANALYZE, BUFFERS) of the reads that take longer than 100 ms.

    BENCH_LEDGER_ROWS=1000000 scripts/bench ledger_scale
    BENCH_LEDGER_BASE=50 BENCH_LEDGER_BASE_FIGURES=0 scripts/bench ledger_scale   # load at 0050, then migrate
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from appliance.kernel.protocol import audit as audit_module
from appliance.kernel.protocol.db.migrate import available, migrate
from appliance.kernel.protocol.ledger import _HISTORY, Ledger, read_history
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import new_run_id
from appliance.kernel.schedule.model import parse_schedule
from appliance.sidecar import timeline
from tests.services import PostgresServer

JOBS = 10
ROWS = int(os.environ.get("BENCH_LEDGER_ROWS", "50000000"))
REPEAT = int(os.environ.get("BENCH_LEDGER_REPEAT", "20"))
BASE = int(os.environ.get("BENCH_LEDGER_BASE", "0")) or None
EXPLAIN = os.environ.get("BENCH_LEDGER_EXPLAIN") == "1"
#: The reads' session as the appliance's from 0070 on: jit off (the audit's and the timeline's connections).
JIT_OFF = any(m.version >= 70 for m in available())
#: "0": no figures before the later migrations, only after them (the load is the longest part of a run).
BASE_FIGURES = os.environ.get("BENCH_LEDGER_BASE_FIGURES", "1") != "0"
#: Seconds of slots loaded per statement (10 slot rows each).
CHUNK = 500_000
#: Bulk load and index builds only; the appliance's embedded PostgreSQL keeps its defaults otherwise.
SERVER_SETTINGS = ("-c", "maintenance_work_mem=512MB", "-c", "max_wal_size=8GB", "-c", "checkpoint_timeout=30min")
EVERY_SECOND = parse_schedule("1s")


@dataclass(frozen=True)
class Job:
    """What the audit reads of a job's settings (as ``tests/kernel/protocol/test_ledger.py``)."""

    name: str
    lock_ttl: float = 60.0
    grace: float = 30.0
    schedule: Any = EVERY_SECOND


_SLOTS = """
INSERT INTO job_slots (job, slot, outcome, run_id, fence, worker, reason, recorded_at)
SELECT job, slot, outcome, CASE WHEN outcome <> 'skipped_locked' THEN run_id END,
       CASE WHEN outcome <> 'skipped_locked' THEN i END, 'bench:1',
       CASE WHEN outcome = 'skipped_locked' THEN 'another worker held the lease' END, slot + interval '8 ms'
FROM (SELECT i, 'job-' || lpad(j::text, 2, '0') AS job, %(t0)s::timestamptz + i * interval '1 s' AS slot,
             substr(md5(i::text || '-' || j::text), 1, 4) || lpad(to_hex(i * %(jobs)s + j), 8, '0') AS run_id,
             CASE WHEN j = %(jobs)s - 1 THEN 'success' WHEN (i * 7 + j * 13) %% 100 = 0 THEN 'failed'
                  WHEN (i * 7 + j * 13) %% 100 = 1 THEN 'skipped_locked' ELSE 'success' END AS outcome
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i CROSS JOIN generate_series(0, %(jobs)s - 1) AS j) AS g
"""
_RUNS = """
INSERT INTO job_runs (run_id, job, slot, trigger, attempt, fence, worker, owner, started_at, finished_at,
                      duration_ms, outcome, processed, error, fence_issued_at, committed_at, commit_seq,
                      planned_start, spec_version, lease_scope)
SELECT run_id, job, slot, 'schedule', 1, i, 'bench:1', 'bench pid=1 run=' || run_id, slot + interval '2 ms',
       slot + interval '7 ms', 5.0, CASE WHEN failed THEN 'failure' ELSE 'success' END, 1,
       CASE WHEN failed THEN 'RuntimeError: bench' END, slot + interval '1 ms',
       CASE WHEN NOT failed THEN slot + interval '6 ms' END, CASE WHEN NOT failed THEN i * %(jobs)s + j END,
       slot, 1, 'job'
FROM (SELECT i, j, 'job-' || lpad(j::text, 2, '0') AS job, %(t0)s::timestamptz + i * interval '1 s' AS slot,
             substr(md5(i::text || '-' || j::text), 1, 4) || lpad(to_hex(i * %(jobs)s + j), 8, '0') AS run_id,
             j < %(jobs)s - 1 AND (i * 7 + j * 13) %% 100 = 0 AS failed
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i CROSS JOIN generate_series(0, %(jobs)s - 1) AS j
      WHERE j = %(jobs)s - 1 OR (i * 7 + j * 13) %% 100 <> 1) AS g
"""
_INDEXES = """
SELECT c.relname, i.relname, pg_get_indexdef(x.indexrelid), k.conname, pg_get_constraintdef(k.oid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.conrelid = x.indrelid
WHERE c.relname IN ('job_slots', 'job_runs')
"""


def load(conn: psycopg.Connection, rows: int) -> datetime:
    """``rows`` slot rows ending at now (their run rows with them); returns the newest slot."""
    seconds = rows // JOBS
    t0 = conn.execute("SELECT date_trunc('second', now()) - make_interval(secs => %s)", (seconds,)).fetchone()[0]
    indexes = conn.execute(_INDEXES).fetchall()
    for table, index, _definition, constraint, _condef in indexes:
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}" if constraint else f"DROP INDEX {index}")
    started = time.perf_counter()
    for lo in range(1, seconds + 1, CHUNK):
        params = {"t0": t0, "lo": lo, "hi": min(seconds, lo + CHUNK - 1), "jobs": JOBS}
        conn.execute(_SLOTS, params)
        conn.execute(_RUNS, params)
        print(f"  loaded {min(seconds, lo + CHUNK - 1) * JOBS:,} slot rows in {time.perf_counter() - started:.0f} s",
              flush=True)
    built = time.perf_counter()
    for table, _index, definition, constraint, condef in indexes:
        conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} {condef}" if constraint else definition)
    conn.execute("SELECT setval('job_commit_seq', %s)", (seconds * JOBS + JOBS,))
    conn.execute("SELECT setval('job_slots_id_seq', (SELECT max(id) FROM job_slots))")
    conn.execute("SELECT setval('job_runs_id_seq', (SELECT max(id) FROM job_runs))")
    conn.execute("INSERT INTO job_fences (job, fence, done_slot) SELECT 'job-' || lpad(j::text, 2, '0'), %s, "
                 "%s::timestamptz + make_interval(secs => %s) FROM generate_series(0, %s - 1) AS j",
                 (seconds, t0, seconds, JOBS))
    analysed = time.perf_counter()
    runs = conn.execute("SELECT count(*) FROM job_runs").fetchone()[0]
    conn.execute("VACUUM ANALYZE job_slots")
    conn.execute("VACUUM ANALYZE job_runs")
    print(f"load: {rows:,} slot rows, {runs:,} run rows: inserted in {built - started:.0f} s, indexes "
          f"built in {analysed - built:.0f} s, VACUUM ANALYZE in {time.perf_counter() - analysed:.0f} s", flush=True)
    return t0 + timedelta(seconds=seconds)


def sizes(conn: psycopg.Connection) -> None:
    for table in ("job_slots", "job_runs"):
        heap, total, count = conn.execute(
            "SELECT pg_size_pretty(pg_table_size(%s::regclass)), pg_size_pretty(pg_total_relation_size(%s::regclass)), "
            "reltuples::bigint FROM pg_class WHERE relname = %s", (table, table, table)).fetchone()
        each = conn.execute(
            "SELECT string_agg(indexrelid::regclass || ' ' || pg_size_pretty(pg_relation_size(indexrelid)), ', ' "
            "ORDER BY indexrelid::regclass::text) FROM pg_index WHERE indrelid = %s::regclass", (table,)).fetchone()[0]
        print(f"  {table}: ~{count:,} rows, table {heap}, with indexes {total} ({each})")


def timed(label: str, action: Callable[[], Any], repeat: int = REPEAT) -> list[float]:
    action()  # warm: the first call plans and reads the pages in, as a running sidecar has done
    took = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        took.append((time.perf_counter() - started) * 1000)
    print(f"  {label}: p50 {statistics.median(took):.1f} ms, p99 {percentile(took, 99):.1f} ms "
          f"(max {max(took):.1f} ms, n={len(took)})", flush=True)
    return took


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def explain(conn: psycopg.Connection, label: str, query: str, params: Any) -> None:
    plan = [row[0] for row in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query}", params).fetchall()]
    print(f"  EXPLAIN {label}:\n" + "\n".join(f"      {line}" for line in plan))


def reads(conn: psycopg.Connection, now: datetime) -> None:
    jobs = [Job(f"job-{j:02d}") for j in range(JOBS)]
    since = now - timedelta(hours=24)
    timed("audit --since 24h, 10 jobs", lambda: audit_module.audit(conn, jobs, since, now, now), max(3, REPEAT // 4))
    timed("audit --since 24h --job job-03", lambda: audit_module.audit(conn, jobs[3:4], since, now, now))
    timed("jobs history (all jobs, 20)", lambda: read_history(conn, None, 20))
    timed("jobs history job-03 (20)", lambda: read_history(conn, "job-03", 20))
    timed("/api/history (all jobs, 50)", lambda: read_history(conn, None, 50))
    timed("/api/history?job=job-03 (50)", lambda: read_history(conn, "job-03", 50))
    timed("/api/history?job=job-09 (50; every slot ran)", lambda: read_history(conn, "job-09", 50))
    for hours in (timeline.DEFAULT_HOURS, timeline.MAX_HOURS):
        params = {"since": now - timedelta(hours=hours), "until": now, "limit": timeline.MAX_MARKS}
        timed(f"timeline {hours} h", lambda p=params: (conn.execute(timeline._SLOTS, p).fetchall(),
                                                      conn.execute(timeline._RUNS, p).fetchall()))
    if EXPLAIN:
        window = {"since": now - timedelta(hours=timeline.MAX_HOURS), "until": now, "limit": timeline.MAX_MARKS}
        end = now - timedelta(seconds=90)
        for label, query, params in (
                ("timeline slots 48 h", timeline._SLOTS, window), ("timeline runs 48 h", timeline._RUNS, window),
                ("history (all jobs, 50)", _HISTORY, {"job": None, "limit": 50}),
                ("history job-03 (50)", _HISTORY, {"job": "job-03", "limit": 50}),
                ("history job-09 (50)", _HISTORY, {"job": "job-09", "limit": 50}),
                ("audit committed runs of job-03", _AUDIT_COMMITTED, {"job": "job-03", "since": since, "end": end,
                                                                      "slot_runs": list(audit_module.SLOT_RUNS)}),
                ("audit slots of job-03", _AUDIT_SLOTS, {"job": "job-03", "since": since, "end": end})):
            started = time.perf_counter()
            conn.execute(query, params).fetchall()
            if time.perf_counter() - started > 0.1:
                explain(conn, label, query, params)


_AUDIT_SLOTS = ("SELECT slot, outcome, run_id FROM job_slots "
                "WHERE job = %(job)s AND slot >= %(since)s AND slot <= %(end)s")
_AUDIT_COMMITTED = (
    "SELECT run_id, slot, trigger, fence, fence_issued_at, committed_at, commit_seq, lease_scope, spec_version "
    "FROM job_runs WHERE job = %(job)s AND committed_at IS NOT NULL AND ((trigger = ANY(%(slot_runs)s) AND slot "
    "BETWEEN %(since)s AND %(end)s) OR fence_issued_at BETWEEN %(since)s AND %(end)s) ORDER BY commit_seq")


def worker_statements(url: str, label: str, job: str, first: datetime, n: int = 500) -> list[float]:
    """``n`` slots of ``job`` from ``first`` on, each opened and finished as the worker does; ms per slot."""
    pool = ConnectionPool(url, min_size=1, max_size=2, open=True, kwargs={"autocommit": True})
    ledger = Ledger(pool)
    took = []
    try:
        for i in range(n + 20):
            slot = first + timedelta(seconds=i)
            run_id = new_run_id()
            started = time.perf_counter()
            ledger.open(job, slot, "schedule", run_id, f"bench run={run_id}", "bench:2", 1, slot, slot, 1, False)
            ledger.finish(run_id, Outcome.SUCCESS, Outcome.SUCCESS, None, 1, {"sent": 1}, 5.0, None)
            if i >= 20:  # the first ones warm the pool and the plans
                took.append((time.perf_counter() - started) * 1000)
    finally:
        pool.close()
    print(f"  worker open + finish per slot, {label}: p50 {statistics.median(took):.2f} ms, "
          f"p99 {percentile(took, 99):.2f} ms (n={len(took)})", flush=True)
    return took


def measure(server: PostgresServer, url: str, empty_url: str, now: datetime, phase: str) -> None:
    print(f"{phase}:", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        if JIT_OFF:  # as `appliance audit` and the timeline's connections do (from migration 0070 on)
            conn.execute("SET jit = off")
        sizes(conn)
        reads(conn, now)
    stamp = now + timedelta(days=1 if phase.startswith("before") else 2)
    worker_statements(url, "loaded ledger", "job-03", stamp)
    worker_statements(empty_url, "empty ledger", "job-03", stamp)


def main() -> None:
    server = PostgresServer(extra_args=SERVER_SETTINGS).start()
    try:
        url, empty_url = server.create_database("ledger"), server.create_database("empty")
        everything = available()
        base = [m for m in everything if BASE is None or m.version <= BASE]
        later = [m for m in everything if m not in base]
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, base)
            print(f"schema: migrations up to {base[-1].version:04d}; {ROWS:,} slot rows, {JOBS} jobs every second "
                  f"from {ROWS // JOBS / 86400:.1f} days ago", flush=True)
            now = load(conn, ROWS)
        with psycopg.connect(empty_url, autocommit=True) as conn:
            migrate(conn, base)
        if BASE_FIGURES or not later:
            phase = f"before migrations after {base[-1].version:04d}" if later else "as is"
            measure(server, url, empty_url, now, phase)
        if later:
            with psycopg.connect(url, autocommit=True) as conn, psycopg.connect(empty_url, autocommit=True) as empty:
                started = time.perf_counter()
                migrate(conn, later)
                print(f"migrations {', '.join(f'{m.version:04d}_{m.name}' for m in later)} applied to the loaded "
                      f"ledger in {time.perf_counter() - started:.0f} s", flush=True)
                migrate(empty, later)
            measure(server, url, empty_url, now, "after")
    finally:
        server.cleanup()
        print(f"removed {server.dir} ({datetime.now(UTC):%H:%M:%S} UTC)")


if __name__ == "__main__":
    main()
