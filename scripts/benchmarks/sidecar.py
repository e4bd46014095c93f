"""Sidecar benchmark: ``/health/live`` requests per second, ``/health`` latency at 500 requests per second, and
the dependency checks per second that load causes, against ``appliance sidecar`` (gunicorn) on this machine.

Starts its own redis-server and PostgreSQL in temp dirs and publishes one job and a heartbeat from this host, so
``/health`` is ``ok``. The load generator (keep-alive connections, one per thread, in several processes) runs on
the same cores as gunicorn, so the figures are a floor for what a probe from another machine would see.

    scripts/bench sidecar [--seconds 5] [--processes 2] [--threads 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psycopg

from tests.services import PostgresServer, RedisServer
from tests.sidecar.cluster import Cluster
from tests.sidecar.load import LoadResult, run_load
from tests.sidecar.processes import SidecarProcess, process_env


def load(url: str, seconds: float, processes: int, threads: int, rate: float | None = None) -> LoadResult:
    """``run_load`` spread over ``processes`` processes (one GIL is not enough to saturate gunicorn)."""
    per_process = rate / processes if rate else None
    with ProcessPoolExecutor(processes) as pool:
        parts = [pool.submit(run_load, url, seconds, threads, per_process) for _ in range(processes)]
        total = LoadResult()
        for part in parts:
            total.merge(part.result())
    return total


class Counters:
    """Dependency checks so far: Redis checks read the dead-letter count once each (ZCARD); each PostgreSQL
    check opens one session on the sidecar's otherwise idle database (minus the one this reading opens)."""

    def __init__(self, redis_server: RedisServer, database_url: str):
        self.redis_server, self.database_url = redis_server, database_url

    def read(self) -> tuple[int, int]:
        with self.redis_server.client() as client:
            zcard = int(client.info("commandstats").get("cmdstat_zcard", {}).get("calls", 0))
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            sessions = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
                                    ).fetchone()[0]
        return zcard, int(sessions)


def report(label: str, result: LoadResult, checks: tuple[int, int] | None = None) -> None:
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(result.statuses.items()))
    line = (f"{label}: {result.rate:,.0f} req/s over {result.seconds:.1f} s ({result.requests} requests; {statuses}; "
            f"{result.errors} errors); latency p50 {result.percentile(50) * 1000:.2f} ms, "
            f"p99 {result.percentile(99) * 1000:.2f} ms, max {max(result.latencies, default=0) * 1000:.1f} ms")
    if checks is not None:
        line += (f"; dependency checks {checks[0] / result.seconds:.1f}/s Redis, "
                 f"{checks[1] / result.seconds:.1f}/s PostgreSQL")
    print(line, flush=True)


def bench(home: Path, redis_server: RedisServer, database_url: str, args: argparse.Namespace,
          cache_ttl: str) -> None:
    env = process_env({"APPLIANCE_HOME": str(home), "REDIS_URL": redis_server.url, "DATABASE_URL": database_url,
                       "HEALTH_CACHE_TTL": cache_ttl, "LOG_LEVEL": "warning"})
    home.mkdir(parents=True, exist_ok=True)
    sidecar = SidecarProcess(env, home / "sidecar.log")
    counters = Counters(redis_server, database_url)
    try:
        sidecar.wait_ready()
        print(f"-- gunicorn: {sidecar.url}, default SIDECAR_WORKERS and SIDECAR_THREADS, "
              f"HEALTH_CACHE_TTL={cache_ttl}s", flush=True)
        load(sidecar.url + "/health", 1, 1, 2)  # warm-up: imports, first checks
        result = load(sidecar.url + "/health/live", args.seconds, args.processes, args.threads)
        report("/health/live unpaced", result)
        before = counters.read()
        result = load(sidecar.url + "/health", args.seconds, args.processes, args.paced_threads, rate=500)
        after = counters.read()
        report("/health at 500 req/s", result, (after[0] - before[0], after[1] - before[1] - 1))
        before = counters.read()
        result = load(sidecar.url + "/health", args.seconds, args.processes, args.threads)
        after = counters.read()
        report("/health unpaced", result, (after[0] - before[0], after[1] - before[1] - 1))
    finally:
        sidecar.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--threads", type=int, default=8, help="connections per load generator process")
    # Few connections for the paced run: a thread waiting for the generator's GIL would inflate the latency.
    parser.add_argument("--paced-threads", type=int, default=2, help="connections per process at 500 req/s")
    args = parser.parse_args(argv)
    redis_server = RedisServer().start()
    postgres = PostgresServer().start()
    try:
        database_url = postgres.create_database("bench")
        with redis_server.client() as client:
            cluster = Cluster(client)
            cluster.publish("tick", schedule="1h", period=3600)
            cluster.run("tick")
            cluster.beat(jobs=["tick"], ttl=3600)
        with tempfile.TemporaryDirectory(prefix="bench-sidecar-") as tmp:
            for cache_ttl in ("1", "0"):
                bench(Path(tmp) / cache_ttl, redis_server, database_url, args, cache_ttl)
    finally:
        redis_server.cleanup()
        postgres.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
