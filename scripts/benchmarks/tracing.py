"""Tracing benchmark: the real ``appliance worker`` process with OpenTelemetry tracing off and on, alternating,
under the same load: scheduling lag (slot to the start of its body) and the worker's CPU per run. On, every slot
exports its span and the job's Redis call as a child to an OTLP/HTTP receiver in this process (``tests.otlp``,
which decodes every export, as a collector would). Starts its own redis-server and PostgreSQL in temp dirs.

    BENCH_SECONDS=20 scripts/bench tracing
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from scripts.benchmarks.worker import _lags, percentile
from tests.otlp import Receiver
from tests.services import PostgresServer, RedisServer
from tests.worker.harness import WorkerProcess, worker_env, write_jobs_file

ROUND = [0]
WARM_UP = 3


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far, in nanoseconds' precision (``schedstat``; ``stat``'s ticks are
    10 ms, coarser than what one run costs)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def _round(base_env: dict[str, str], home: Path, jobs: int, seconds: int, client: redis.Redis,
           endpoint: str | None, schedule: str = "1s") -> tuple[list[float], float, int]:
    """One worker for ``seconds`` after a warm-up: (lags in ms, CPU seconds used meanwhile, runs meanwhile)."""
    ROUND[0] += 1
    names = [f"tr{ROUND[0]}-{i}" for i in range(jobs)]
    client.flushdb()
    jobs_file = write_jobs_file(home / f"tr{ROUND[0]}.toml", {
        name: {"callable": "scripts.benchmarks.lag_jobs:record", "schedule": schedule} for name in names})
    extra = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint} if endpoint else {}
    env = worker_env(base_env, jobs_file, names, LOG_FORMAT="json", LOG_LEVEL="info", **extra)
    if not endpoint:
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    proc = WorkerProcess(env, home / f"tr{ROUND[0]}.log")
    proc.wait_for_log("worker started")
    time.sleep(WARM_UP)
    client.delete("bench:lag:appliance")
    cpu0 = _cpu_seconds(proc.pid)
    time.sleep(seconds)
    cpu1 = _cpu_seconds(proc.pid)
    lags = _lags(client, "appliance", 0)
    proc.terminate()
    return lags, cpu1 - cpu0, len(lags)


def bench_idle(base_env: dict[str, str], home: Path, receiver: Receiver, seconds: int) -> dict[str, float]:
    """The worker's CPU per second with nothing due (one hourly job): its loop, heartbeats and control channel."""
    client = redis.Redis.from_url(base_env["REDIS_URL"], decode_responses=True)
    idle = {}
    for label, endpoint in (("off", None), ("on", receiver.endpoint)):
        _, cpu, _ = _round(base_env, home, 1, seconds, client, endpoint, schedule="1h")
        idle[label] = cpu / seconds
    print(f"idle worker (one hourly job), {seconds}s each: CPU per second tracing off {idle['off'] * 1e6:.0f} µs, "
          f"on {idle['on'] * 1e6:.0f} µs ({(idle['on'] - idle['off']) * 1e6:+.0f} µs/s)")
    return idle


def bench_tracing_side_by_side(base_env: dict[str, str], home: Path, receiver: Receiver, jobs: int, seconds: int,
                               idle: dict[str, float], rounds: int = 2) -> None:
    client = redis.Redis.from_url(base_env["REDIS_URL"], decode_responses=True)
    results: dict[str, tuple[list[float], float, int]] = {"off": ([], 0.0, 0), "on": ([], 0.0, 0)}
    before = len(receiver.spans())
    for _ in range(rounds):
        for label, endpoint in (("off", None), ("on", receiver.endpoint)):
            lags, cpu, runs = _round(base_env, home, jobs, seconds, client, endpoint)
            total = results[label]
            results[label] = (total[0] + lags, total[1] + cpu, total[2] + runs)
    spans = len(receiver.spans()) - before
    print(f"tracing off and on, {jobs} job(s) every 1s, {rounds} alternating rounds of {seconds}s (CPU: all the "
          f"worker process's threads; per run: less what the idle worker uses in the same time):")
    per_run = {}
    for label, (lags, cpu, runs) in results.items():
        per_run[label] = (cpu - idle[label] * seconds * rounds) / max(runs, 1) * 1e6
        print(f"  tracing {label:3}: {runs} runs, lag p50 {percentile(lags, 50):.2f} ms, p99 "
              f"{percentile(lags, 99):.2f} ms; worker CPU {cpu:.2f} s, {cpu / max(runs, 1) * 1e6:.0f} µs per run, "
              f"{per_run[label]:.0f} µs per run less idle")
    print(f"  overhead of tracing: {per_run['on'] - per_run['off']:+.0f} µs of CPU per run; "
          f"{spans} spans received and decoded ({spans / max(results['on'][2], 1):.1f} per run)")


def main() -> None:
    redis_server = RedisServer().start()
    postgres = PostgresServer().start()
    receiver = Receiver().start()
    home = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    try:
        url = postgres.create_database("bench")
        subprocess.run([sys.executable, "-m", "appliance", "migrate"], check=True, capture_output=True,
                       env={**os.environ, "DATABASE_URL": url, "APPLIANCE_HOME": str(home)})
        seconds = int(os.environ.get("BENCH_SECONDS", 60))
        base = {"APPLIANCE_HOME": str(home), "REDIS_URL": redis_server.url, "DATABASE_URL": url}
        idle = bench_idle(base, home, receiver, seconds)
        for jobs in (1, 10):
            bench_tracing_side_by_side(base, home, receiver, jobs, seconds, idle)
    finally:
        receiver.stop()
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
