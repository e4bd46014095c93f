"""Process isolation's cost per run: the same job under ``isolation = "thread"`` and ``"process"`` side by side,
in alternating rounds of a real ``appliance worker`` against its own redis-server and PostgreSQL.

The job (``commit``, this module's, importable by the child) does what a small job does: one fenced transaction
that completes its slot. For each run: the time from its slot to its body's first line (``start``), the body as
the worker times it (``job_runs.duration_ms``: for a child, its fork from the forkserver, its configuration and
clients, the body and the answer back), and from the slot to the run's end in the ledger (``slot→end``).
``BENCH_SECONDS`` (default 60) is split over two rounds of each."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from appliance.sdk import complete_slot
from tests.services import PostgresServer, RedisServer
from tests.worker.harness import WorkerProcess, worker_env, write_jobs_file

WARM_UP = 2  # runs of each round left out: the first child also starts the forkserver
TABLE = "CREATE TABLE IF NOT EXISTS bench_isolation (run_id text, started double precision, pid int)"


def commit(ctx) -> None:
    started = time.time()
    with ctx.db.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO bench_isolation (run_id, started, pid) VALUES (%s, %s, %s)",
                     (ctx.run_id, started, os.getpid()))
        complete_slot(conn, ctx)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def one_round(base: dict[str, str], home: Path, db_url: str, isolation: str, number: int,
              seconds: int) -> list[tuple[float, float, float, int]]:
    """``seconds`` of a 1 s job under ``isolation``: (start ms, body ms, slot→end ms, pid) per run."""
    name = f"iso-{isolation}-{number}"  # a new job each round: no misfire of an earlier one
    jobs_file = write_jobs_file(home / f"{name}.toml", {name: {
        "callable": "scripts.benchmarks.isolation:commit", "schedule": "1s", "isolation": isolation}})
    proc = WorkerProcess(worker_env(base, jobs_file, [name]), home / f"{name}.log")
    proc.wait_for_log("worker started", timeout=30)
    time.sleep(seconds)
    code, _ = proc.terminate()
    if code != 0:
        sys.exit(f"the worker of {name} exited {code}; see {home / (name + '.log')}")
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT b.started - extract(epoch FROM r.slot), r.duration_ms, "
            "extract(epoch FROM r.finished_at - r.slot), b.pid FROM job_runs r "
            "JOIN bench_isolation b USING (run_id) WHERE r.job = %s AND r.outcome = 'success' ORDER BY r.slot",
            (name,)).fetchall()
    return [(start * 1000, float(body), end * 1000, pid) for start, body, end, pid in rows[WARM_UP:]]


def report(isolation: str, runs: list[tuple[float, float, float, int]]) -> dict[str, float]:
    columns = {"start": [r[0] for r in runs], "body": [r[1] for r in runs], "slot→end": [r[2] for r in runs]}
    text = "; ".join(f"{name} p50 {percentile(v, 50):.1f} ms p90 {percentile(v, 90):.1f} ms max {max(v):.1f} ms"
                     for name, v in columns.items())
    print(f"  {isolation:<7} {len(runs)} runs in {len({r[3] for r in runs})} process(es): {text}")
    return {name: percentile(v, 50) for name, v in columns.items()}


def main() -> None:
    redis_server = RedisServer().start()
    postgres = PostgresServer().start()
    home = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    try:
        url = postgres.create_database("bench")
        subprocess.run([sys.executable, "-m", "appliance", "migrate"], check=True, capture_output=True,
                       env={**os.environ, "DATABASE_URL": url, "APPLIANCE_HOME": str(home)})
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(TABLE)
        seconds = max(int(os.environ.get("BENCH_SECONDS", 60)) // 2, 10)
        base = {"APPLIANCE_HOME": str(home), "REDIS_URL": redis_server.url, "DATABASE_URL": url}
        found: dict[str, list[tuple[float, float, float, int]]] = {"thread": [], "process": []}
        for number in range(2):
            for isolation in found:
                found[isolation] += one_round(base, home, url, isolation, number, seconds)
        print(f"isolation per run, one job every 1s (one fenced commit), 2 alternating rounds of {seconds}s each:")
        thread, process = (report(isolation, runs) for isolation, runs in found.items())
        extra = {name: process[name] - thread[name] for name in thread}
        print("  process - thread (p50): " + ", ".join(f"{name} +{ms:.1f} ms" for name, ms in extra.items()))
    finally:
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
