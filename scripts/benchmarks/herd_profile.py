"""Where a herd's time goes: one worker in this process (lease, fence, ledger in PostgreSQL, JSON logs to a
file) running N jobs due on the same second, every thread profiled with cProfile, and the process's CPU time
per slot. Prints the functions with the most time of their own, summed over every thread.

    HERD_JOBS=200 HERD_SECONDS=15 scripts/bench herd_profile
    HERD_PROFILE=0 ...                       # no profile: lag, CPU, round trips and statements per slot

The same script measures an older commit: ``git archive COMMIT | tar -x -C /tmp/before``, then run it with
``PYTHONPATH=/tmp/before:$PWD`` (the appliance from there, the test services from here).

cProfile runs with each thread's CPU clock (``time.thread_time``) in every thread the worker starts: the figures
are CPU time, not waits (a thread waiting for the GIL or a lock charges nothing). Starts its own
redis-server and PostgreSQL.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import redis
from psycopg_pool import ConnectionPool

from appliance.config import load_config
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.runtime.logs import setup_logging
from appliance.worker import main as worker_main
from tests.services import PostgresServer, RedisServer
from tests.worker.harness import write_jobs_file

LAGS: list[float] = []
PROFILES: list[cProfile.Profile] = []
_LOCK = threading.Lock()


def record_lag(ctx) -> None:
    LAGS.append(time.time() - ctx.slot.timestamp())


def _profiled(target):
    def run(*args, **kwargs):
        profile = cProfile.Profile(time.thread_time)  # CPU time of this thread, not the wall clock
        with _LOCK:
            PROFILES.append(profile)
        profile.enable()
        try:
            return target(*args, **kwargs)
        finally:
            profile.disable()
    return run


CLAIMS: list[tuple[int, float]] = []  # (slots, seconds) of each herd's claim
CALLS: Counter[str] = Counter()  # calls of the batched operations, and every Redis command and SQL statement


def _counted(name: str, target):
    def counted(*args, **kwargs):
        CALLS[name] += 1
        return target(*args, **kwargs)
    return counted


def count_calls() -> None:
    """Count, from here on, every Redis round trip and SQL statement of this process, and the herd's batched
    calls (what each carries is the same as alone)."""
    from redis.connection import Connection

    from appliance.kernel.protocol import locks


    Connection.send_packed_command = _counted("redis", Connection.send_packed_command)  # type: ignore[method-assign]
    psycopg.Connection.execute = _counted("sql", psycopg.Connection.execute)  # type: ignore[method-assign]
    try:
        from appliance.worker import ends, herd
    except ImportError:  # the code before herds: only the totals
        return
    for module, name in ((locks, "acquire_many"), (locks, "finish_many"), (herd, "open_runs"),
                         (ends, "finish_runs")):
        setattr(module, name, _counted(name, getattr(module, name)))


def _timed_take(take):
    def timed(claims, herd):
        t0 = time.perf_counter()
        try:
            return take(claims, herd)
        finally:
            CLAIMS.append((len(herd), time.perf_counter() - t0))
    return timed


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    jobs = int(os.environ.get("HERD_JOBS", 200))
    seconds = int(os.environ.get("HERD_SECONDS", 15))
    profile = os.environ.get("HERD_PROFILE", "1") == "1"
    redis_server = RedisServer().start()
    postgres = PostgresServer().start()
    home = Path(tempfile.mkdtemp(prefix="bench-herd-"))
    try:
        url = postgres.create_database("bench")
        subprocess.run([sys.executable, "-m", "appliance", "migrate"], check=True, capture_output=True,
                       env={**os.environ, "DATABASE_URL": url, "APPLIANCE_HOME": str(home)})
        names = [f"herd-{i}" for i in range(jobs)]
        jobs_file = write_jobs_file(home / "herd.toml", {
            name: {"callable": "__main__:record_lag", "schedule": "1s"} for name in names})
        env = {"APPLIANCE_HOME": str(home), "REDIS_URL": redis_server.url, "DATABASE_URL": url,
               "APPLIANCE_JOBS_FILE": str(jobs_file), "JOBS_ENABLED": ",".join(names), "LOG_LEVEL": "info"}
        config = load_config(env, env_file=None)
        log_file = open(home / "worker.log", "w")  # noqa: SIM115 - closed at the end
        try:
            setup_logging("json", "info", "worker", stream=log_file, background=True)
        except TypeError:  # the code before herds: its handler was the stream's own
            setup_logging("json", "info", "worker", stream=log_file)
        switch = getattr(worker_main, "switch_interval", lambda _: worker_main.GIL_SWITCH_INTERVAL)
        sys.setswitchinterval(switch(jobs))
        if profile:  # every thread started from here on: the runs', the loop's, the keeper's, the log writer's
            threading.Thread.run = _profiled(threading.Thread.run)  # type: ignore[method-assign]
        from appliance.worker import loop as worker_loop
        if hasattr(worker_loop, "take_herd"):
            worker_loop.take_herd = _timed_take(worker_loop.take_herd)  # type: ignore[attr-defined]
        client = redis.Redis.from_url(redis_url := redis_server.url, decode_responses=True)
        ledger_pool = ConnectionPool(url, min_size=4, max_size=jobs + 2, open=True, kwargs={"autocommit": True})
        assembly = worker_main.build(config, client, db=None, ledger=Ledger(ledger_pool))
        worker = assembly.worker
        worker.plan()
        assembly.start()
        loop = threading.Thread(target=worker.run_forever, name="loop", daemon=True)
        loop.start()
        time.sleep(3)
        count_calls()
        LAGS.clear()
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu, wall, slots = time.process_time() - cpu0, time.monotonic() - wall0, len(LAGS)
        lags = [lag * 1000 for lag in LAGS]
        claims = [seconds * 1000 for _, seconds in CLAIMS[2:]]
        per = max(slots, 1)
        print(f"per slot: {CALLS['redis'] / per:.3f} Redis round trips, {CALLS['sql'] / per:.3f} SQL statements "
              f"(every thread: loop, keeper, heartbeat, recorder, the job's own rpush none here); per "
              f"{seconds} instants: {CALLS['acquire_many']} acquire_many, {CALLS['open_runs']} open_runs, "
              f"{CALLS['finish_many']} finish_many, {CALLS['finish_runs']} finish_runs")
        print(f"herd claims: {len(CLAIMS)}, slots each {sorted({n for n, _ in CLAIMS})}, take_herd p50 "
              f"{percentile(claims, 50):.1f} ms max {max(claims, default=0):.1f} ms")
        worker.stop()
        loop.join(5)
        worker.pool.wait_idle(5)
        assembly.stop(2)
        worker.runner.recorder.stop(2)
        ledger_pool.close()
        print(f"{jobs} jobs every 1s, {seconds}s measured{' (profiled)' if profile else ''}: {slots} runs "
              f"of {jobs * seconds} slots, lag p50 {percentile(lags, 50):.1f} ms p99 {percentile(lags, 99):.1f} ms "
              f"max {max(lags):.1f} ms; process CPU {cpu / wall * 100:.0f}% of a core, "
              f"{cpu / max(slots, 1) * 1e6:.0f} us per slot; redis {redis_url}")
        if profile:
            stats = pstats.Stats(PROFILES[0], stream=(out := io.StringIO()))
            for extra in PROFILES[1:]:
                stats.add(extra)
            stats.sort_stats("tottime").print_stats(int(os.environ.get("HERD_TOP", 35)))
            print(out.getvalue())
            stats.sort_stats("cumulative").print_stats(int(os.environ.get("HERD_TOP", 35)))
            print(out.getvalue()[-12000:])
    finally:
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
