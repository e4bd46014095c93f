"""Herds: many jobs due on one instant. The real ``appliance worker`` process (lease, slot marker, ledger in
PostgreSQL, JSON logs at info) side by side with APScheduler 3 and a redis-py ``Lock`` around each run, on the
same Redis, in alternating rounds; lag = the job's first line minus its slot's instant; a slot that has no run
in the measured window is missed. CPU per slot is the scheduler processes' user+system time over the window
divided by the runs in it.

    scripts/bench herd                       # everything (about 20 minutes)
    HERD_PARTS=vs200,minute scripts/bench herd
    HERD_PARTS=curve HERD_CURVE=50,100,200 HERD_SECONDS=20 scripts/bench herd

Parts: ``vs200`` (200 jobs every second, ``HERD_ROUNDS`` alternating rounds), ``minute`` (1,000 jobs at :00 of
each minute, 3 instants each), ``curve`` (jobs every second, one worker and three workers on one Redis and
PostgreSQL, appliance only). Starts its own redis-server and PostgreSQL.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from scripts.benchmarks.lag_jobs import SLOTS
from tests.services import PostgresServer, RedisServer
from tests.worker.harness import WorkerProcess, worker_env, write_jobs_file

REPO = Path(__file__).resolve().parents[2]
ROUND = [0]


@dataclass
class Figures:
    runs: int
    expected: int
    lags_ms: list[float]
    cpu_s: float
    #: The appliance's ledger rows of the window's slots, by outcome.
    ledger: dict[str, int] = field(default_factory=dict)

    @property
    def missed(self) -> int:
        return self.expected - self.runs

    def p(self, q: float) -> float:
        ordered = sorted(self.lags_ms) or [math.nan]
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def __add__(self, other: Figures) -> Figures:
        return Figures(self.runs + other.runs, self.expected + other.expected, self.lags_ms + other.lags_ms,
                       self.cpu_s + other.cpu_s, dict(Counter(self.ledger) + Counter(other.ledger)))

    def text(self) -> str:
        per_slot = self.cpu_s / self.runs * 1e6 if self.runs else math.nan
        return (f"{self.runs}/{self.expected} slots run ({self.missed} missed), lag p50 {self.p(50):.1f} ms "
                f"p99 {self.p(99):.1f} ms max {max(self.lags_ms, default=math.nan):.1f} ms, "
                f"CPU {per_slot:.0f} us/slot{f', ledger rows {self.ledger}' if self.ledger else ''}")


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _window(period: int, instants: int) -> tuple[float, float]:
    """The measured slots: ``instants`` whole periods starting at the second period boundary from now."""
    now = time.time()
    first = (math.floor(now / period) + 2) * period
    return first, first + instants * period


def _collect(client: redis.Redis, who: str, first: float, last: float, jobs: int, period: int,
             cpu_s: float) -> Figures:
    key = SLOTS.format(who)
    rows = [line.split() for line in client.lrange(key, 0, -1)]
    client.delete(key)
    seen: dict[tuple[str, int], float] = {}
    for name, slot, lag in rows:
        if first <= float(slot) < last:
            seen.setdefault((name, round(float(slot))), float(lag) * 1000)
    expected = jobs * round((last - first) / period)
    worst: dict[int, float] = {}
    for (_, slot_s), lag in seen.items():
        worst[slot_s] = max(worst.get(slot_s, 0.0), lag)
    if os.environ.get("HERD_VERBOSE"):
        print(f"    {who}: worst lag of each instant (ms): {[round(worst[s]) for s in sorted(worst)]}")
    return Figures(len(seen), expected, list(seen.values()), cpu_s)


def _wait_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


def appliance_round(base: dict[str, str], home: Path, client: redis.Redis, jobs: int, period: int,
                    instants: int, workers: int = 1) -> Figures:
    ROUND[0] += 1
    names = [f"r{ROUND[0]}-{i}" for i in range(jobs)]
    client.flushdb()
    schedule = "1s" if period == 1 else "0 * * * *" if period == 3600 else f"{period}s"
    jobs_file = write_jobs_file(home / f"herd{ROUND[0]}.toml", {
        name: {"callable": "scripts.benchmarks.lag_jobs:record_slot", "schedule": schedule} for name in names})
    env = worker_env(base, jobs_file, names, LOG_FORMAT="json", LOG_LEVEL="info", HEARTBEAT_TTL="30")
    procs = [WorkerProcess(env, home / f"herd{ROUND[0]}-{w}.log") for w in range(workers)]
    try:
        for proc in procs:
            proc.wait_for_log("worker started", timeout=120)
        first, last = _window(period, instants)
        _wait_until(first - 0.5)
        cpu0 = sum(_cpu(p.pid) for p in procs)
        _wait_until(last - 0.5)
        cpu = sum(_cpu(p.pid) for p in procs) - cpu0
        _wait_until(last + 3)  # the last instant's runs record themselves
    finally:
        for proc in procs:
            proc.terminate(30)
    figures = _collect(client, "appliance", first, last, jobs, period, cpu)
    with psycopg.connect(base["DATABASE_URL"], autocommit=True) as conn:
        figures.ledger = dict(conn.execute(
            "SELECT outcome, count(*) FROM job_slots WHERE job = ANY(%s) AND slot >= to_timestamp(%s) "
            "AND slot < to_timestamp(%s) GROUP BY outcome", (names, first, last)).fetchall())
    return figures


def aps_round(redis_url: str, client: redis.Redis, jobs: int, period: int, instants: int) -> Figures:
    client.delete(SLOTS.format("apscheduler"))
    first, last = _window(period, instants)
    # It runs from now until 3 s after the window; its start-up (1,000 jobs added) happens before the window.
    proc = subprocess.Popen([sys.executable, "-m", "scripts.benchmarks.lag_jobs", redis_url, str(jobs),
                             str(last + 3 - time.time()), str(period)],
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    _wait_until(first - 0.5)
    cpu0 = _cpu(proc.pid)
    _wait_until(last - 0.5)
    cpu = _cpu(proc.pid) - cpu0
    proc.wait(60 + period)
    return _collect(client, "apscheduler", first, last, jobs, period, cpu)


def side_by_side(redis_url: str, base: dict[str, str], home: Path, jobs: int, period: int, instants: int,
                 rounds: int) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ours = theirs = Figures(0, 0, [], 0.0)
    for r in range(rounds):
        a = appliance_round(base, home, client, jobs, period, instants)
        b = aps_round(redis_url, client, jobs, period, instants)
        print(f"  round {r + 1}: appliance {a.text()}; APScheduler {b.text()}; load {_load()}", flush=True)
        ours, theirs = ours + a, theirs + b
    print(f"{jobs} jobs every {period}s, {rounds} alternating rounds of {instants} instants: appliance "
          f"{ours.text()}; APScheduler 3 + Lock {theirs.text()}; p99 ratio {ours.p(99) / theirs.p(99):.2f}",
          flush=True)


def curve(redis_url: str, base: dict[str, str], home: Path, sizes: list[int], seconds: int) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    best = {1: 0, 3: 0}
    counts = [int(n) for n in os.environ.get("HERD_WORKERS", "1,3").split(",")]
    for jobs in sizes:
        for workers in counts:
            f = appliance_round(base, home, client, jobs, 1, seconds, workers)
            ok = f.p(99) <= 50 and f.missed == 0
            if ok:
                best[workers] = max(best[workers], jobs)
            print(f"  {jobs} jobs every 1s, {workers} worker(s), {seconds} instants: {f.text()}"
                  f"{'' if ok else ' (over the goal)'}; load {_load()}", flush=True)
    print(f"largest sustained with p99 <= 50 ms and no slot missed: one worker {best[1]}, three workers {best[3]}",
          flush=True)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parts = os.environ.get("HERD_PARTS", "vs200,minute,curve").split(",")
    seconds = int(os.environ.get("HERD_SECONDS", 20))
    rounds = int(os.environ.get("HERD_ROUNDS", 2))
    redis_server = RedisServer().start()
    postgres = PostgresServer().start()
    home = Path(tempfile.mkdtemp(prefix="bench-herd-"))
    try:
        url = postgres.create_database("bench")
        subprocess.run([sys.executable, "-m", "appliance", "migrate"], check=True, capture_output=True,
                       env={**os.environ, "DATABASE_URL": url, "APPLIANCE_HOME": str(home)})
        base = {"APPLIANCE_HOME": str(home), "REDIS_URL": redis_server.url, "DATABASE_URL": url}
        if "vs200" in parts:
            side_by_side(redis_server.url, base, home, 200, 1, seconds, rounds)
        if "minute" in parts:
            side_by_side(redis_server.url, base, home, int(os.environ.get("HERD_MINUTE_JOBS", 1000)), 60, 3,
                         int(os.environ.get("HERD_MINUTE_ROUNDS", 1)))
        if "curve" in parts:
            sizes = [int(n) for n in os.environ.get("HERD_CURVE", "50,100,200,500,1000").split(",")]
            curve(redis_server.url, base, home, sizes, seconds)
    finally:
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
