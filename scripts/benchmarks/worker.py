"""Worker benchmark: scheduling lag and the cost of the ledger per slot (Redis round trips, PostgreSQL
statements), with the ledger on and off side by side; lease throughput against redis-py's Lock; the idle
worker's CPU and RSS. Starts its own redis-server and PostgreSQL in temp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import redis
from psycopg_pool import ConnectionPool
from redis.connection import Connection

from appliance.config import load_config
from appliance.kernel.protocol import locks
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.protocol.owner import make_token, new_run_id
from appliance.kernel.runtime.clock import SYSTEM
from tests.services import PostgresServer, RedisServer
from tests.worker.harness import WorkerProcess, worker_env, write_jobs_file

LAGS: list[float] = []
ROUND = [0]  # rounds so far: each uses jobs of its own
RUN_THREAD_PREFIX = "run-"
WARM_UP = 3  # appliance.worker.pool names its threads run-0, run-1, ...


def record_lag(ctx) -> None:
    LAGS.append(time.time() - ctx.slot.timestamp())


class CountingConnection(Connection):
    """Counts round trips, split into those of job runs (pool threads) and the loop's own (refresh, beats)."""

    round_trips = 0
    by_runs = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.round_trips += 1
        if threading.current_thread().name.startswith(RUN_THREAD_PREFIX):
            CountingConnection.by_runs += 1
        return super().send_packed_command(command, check_health)


class CountingPgConnection(psycopg.Connection):
    """Counts the statements the runs send to PostgreSQL (the ledger's start and finish)."""

    by_runs = 0

    def execute(self, query, params=None, **kwargs):
        if threading.current_thread().name.startswith(RUN_THREAD_PREFIX):
            CountingPgConnection.by_runs += 1
        return super().execute(query, params, **kwargs)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_lag_and_round_trips(redis_url: str, home: Path, jobs: int, seconds: int, db_url: str | None) -> list[float]:
    """``jobs`` jobs every second for ``seconds``: lag from each slot to its job's first line; with
    ``db_url`` the runs open and close themselves in the ledger (the worker's normal path), else not."""
    from appliance.worker.main import build

    LAGS.clear()
    ROUND[0] += 1
    names = [f"lag{ROUND[0]}-{i}" for i in range(jobs)]  # new jobs each round: no misfire of an earlier one
    redis.Redis.from_url(redis_url).flushdb()
    jobs_file = write_jobs_file(home / f"lag{jobs}.toml", {
        name: {"callable": "__main__:record_lag", "schedule": "1s"} for name in names})
    env = {"APPLIANCE_HOME": str(home), "REDIS_URL": redis_url, "APPLIANCE_JOBS_FILE": str(jobs_file),
           "JOBS_ENABLED": ",".join(names), "HEARTBEAT_TTL": "300", "LOG_LEVEL": "warning"}
    config = load_config(env, env_file=None)
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        redis_url, decode_responses=True, connection_class=CountingConnection))
    pool = None
    if db_url:
        pool = ConnectionPool(db_url, min_size=jobs + 1, max_size=jobs + 2, open=True,
                              connection_class=CountingPgConnection, kwargs={"autocommit": True})
    worker = build(config, client, db=None, ledger=Ledger(pool) if pool else None).worker
    worker.plan()
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    # Round trips are counted after a warm-up: new connections cost a few commands of their own and Lua
    # scripts are loaded once per server.
    time.sleep(WARM_UP)
    start_trips, start_runs, start_slots = CountingConnection.round_trips, CountingConnection.by_runs, len(LAGS)
    start_pg = CountingPgConnection.by_runs
    time.sleep(max(seconds - WARM_UP, 1))
    worker.stop()
    thread.join(5)
    worker.pool.wait_idle(5)
    worker.runner.recorder.stop(2)
    if pool:
        pool.close()
    trips = CountingConnection.round_trips - start_trips
    run_trips = CountingConnection.by_runs - start_runs
    lags_ms = [lag * 1000 for lag in LAGS]
    slots = max(len(LAGS) - start_slots, 1)
    label = "ledger on " if db_url else "ledger off"
    print(f"  {label}: {jobs} job(s) every 1s for {seconds}s, {len(lags_ms)} slots: lag p50 "
          f"{percentile(lags_ms, 50):.2f} ms, p99 {percentile(lags_ms, 99):.2f} ms, max {max(lags_ms):.2f} ms; "
          f"per slot: {run_trips / slots:.2f} Redis round trips by the runs ({trips / slots:.2f} with the "
          f"loop's refresh and heartbeats), {(CountingPgConnection.by_runs - start_pg) / slots:.2f} PostgreSQL "
          f"statements")
    return lags_ms


def bench_ledger_side_by_side(redis_url: str, db_url: str, home: Path, jobs: int, seconds: int,
                              rounds: int = 2) -> None:
    """The ledger's cost: the same load with it off and on, alternating, ``rounds`` times each."""
    print(f"scheduling lag and cost per slot, {jobs} job(s), ledger off and on alternating ({rounds} rounds):")
    off: list[float] = []
    on: list[float] = []
    for _ in range(rounds):
        off += bench_lag_and_round_trips(redis_url, home, jobs, seconds, None)
        on += bench_lag_and_round_trips(redis_url, home, jobs, seconds, db_url)
    print(f"  all rounds: ledger off p50 {percentile(off, 50):.2f} ms p99 {percentile(off, 99):.2f} ms; "
          f"ledger on p50 {percentile(on, 50):.2f} ms p99 {percentile(on, 99):.2f} ms "
          f"(p99 on/off {percentile(on, 99) / percentile(off, 99):.2f})")


def _lags(client: redis.Redis, who: str, skip: int) -> list[float]:
    key = f"bench:lag:{who}"
    values = [float(v) * 1000 for v in client.lrange(key, 0, -1)][skip:]
    client.delete(key)
    return values


def _appliance_round(base_env: dict[str, str], home: Path, jobs: int, seconds: int, client: redis.Redis) -> list[float]:
    ROUND[0] += 1
    names = [f"vs{ROUND[0]}-{i}" for i in range(jobs)]
    client.flushdb()
    jobs_file = write_jobs_file(home / f"vs{jobs}.toml", {
        name: {"callable": "scripts.benchmarks.lag_jobs:record", "schedule": "1s"} for name in names})
    proc = WorkerProcess(worker_env(base_env, jobs_file, names, LOG_FORMAT="json", LOG_LEVEL="info"),
                         home / f"vs{jobs}.log")
    proc.wait_for_log("worker started")
    client.delete("bench:lag:appliance")
    time.sleep(seconds)
    proc.terminate()
    return _lags(client, "appliance", 2 * jobs)


def _aps_round(redis_url: str, jobs: int, seconds: int, client: redis.Redis) -> list[float]:
    client.delete("bench:lag:apscheduler")
    subprocess.run([sys.executable, "-m", "scripts.benchmarks.lag_jobs", redis_url, str(jobs), str(seconds + 1)],
                   check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    return _lags(client, "apscheduler", 2 * jobs)


def bench_vs_apscheduler(redis_url: str, base_env: dict[str, str], home: Path, jobs: int, seconds: int,
                         rounds: int = 2) -> None:
    """The real ``appliance worker`` process (lease, slot marker, ledger in PostgreSQL, default logging)
    against APScheduler 3 with a redis-py ``Lock`` around each run, in the same Redis, alternating: lag from
    each slot to the start of its run's body."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        ours += _appliance_round(base_env, home, jobs, seconds, client)
        theirs += _aps_round(redis_url, jobs, seconds, client)
    p99_ours, p99_theirs = percentile(ours, 99), percentile(theirs, 99)
    print(f"vs APScheduler 3 + redis-py Lock, {jobs} job(s) every 1s, {rounds} alternating rounds of {seconds}s: "
          f"appliance worker ({len(ours)} runs) p50 {percentile(ours, 50):.2f} ms p99 {p99_ours:.2f} ms; "
          f"APScheduler ({len(theirs)} runs) p50 {percentile(theirs, 50):.2f} ms p99 {p99_theirs:.2f} ms; "
          f"p99 ratio {p99_ours / p99_theirs:.2f}")


def bench_lock_throughput(redis_url: str, n: int = 5000) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    scripts = locks.register(client)
    token = make_token(new_run_id(), SYSTEM.now())

    def ours() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            locks.acquire(scripts, "bench", token, 60, None)
            locks.release(scripts, "bench", token)
        return n / (time.perf_counter() - t0)

    def redis_py() -> float:
        lock = client.lock("lock:bench-redis-py", timeout=60)
        t0 = time.perf_counter()
        for _ in range(n):
            lock.acquire(blocking=False)
            lock.release()
        return n / (time.perf_counter() - t0)

    rounds = [(ours(), redis_py()) for _ in range(3)]
    best_ours = max(r[0] for r in rounds)
    best_theirs = max(r[1] for r in rounds)
    print(f"lock acquire+release per second: appliance {best_ours:,.0f}/s, redis-py Lock {best_theirs:,.0f}/s, "
          f"ratio {best_ours / best_theirs:.2f} (best of 3 alternating rounds of {n})")


def bench_idle(base_env: dict[str, str], home: Path, seconds: int = 60) -> None:
    jobs_file = write_jobs_file(home / "idle.toml", {"hourly": {"callable": "tests.worker.sample_jobs:tick",
                                                                 "schedule": "1h"}})
    env = worker_env(base_env, jobs_file, ["hourly"], LOG_LEVEL="warning")
    proc = WorkerProcess(env, home / "idle.log")
    time.sleep(3)
    cpu0 = _cpu_seconds(proc.pid)
    time.sleep(seconds)
    cpu1 = _cpu_seconds(proc.pid)
    rss = _rss_kib(proc.pid)
    proc.terminate()
    print(f"idle worker over {seconds}s: CPU {cpu1 - cpu0:.3f}s ({(cpu1 - cpu0) / seconds * 100:.3f}% of a core), "
          f"RSS {rss / 1024:.1f} MiB")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    redis_server = RedisServer().start()
    postgres = PostgresServer().start()
    home = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    try:
        url = postgres.create_database("bench")
        subprocess.run([sys.executable, "-m", "appliance", "migrate"], check=True, capture_output=True,
                       env={**os.environ, "DATABASE_URL": url, "APPLIANCE_HOME": str(home)})
        bench_lock_throughput(redis_server.url)
        seconds = int(os.environ.get("BENCH_SECONDS", 60))
        base = {"APPLIANCE_HOME": str(home), "REDIS_URL": redis_server.url, "DATABASE_URL": url}
        for jobs in (1, 10):
            bench_vs_apscheduler(redis_server.url, base, home, jobs, max(seconds // 2, 10))
        bench_ledger_side_by_side(redis_server.url, url, home, jobs=1, seconds=seconds)
        bench_ledger_side_by_side(redis_server.url, url, home, jobs=10, seconds=max(seconds // 2, 10))
        bench_idle(base, home)
    finally:
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
