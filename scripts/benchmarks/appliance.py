"""Appliance benchmark: time from ``appliance run`` to ``/health`` ok with an external Redis and PostgreSQL
(goal <= 5 s), the RSS of supervisord + worker + sidecar, and SIGTERM-to-exit time (goal <= SHUTDOWN_TIMEOUT
+ 2 s), idle, while a job that ignores checkpoints is running, and while a job holds the GIL in one C call
(so not even the worker's signal handler runs until supervisord's SIGKILL): the worst cases there are.

Starts its own redis-server and PostgreSQL in temp dirs. Qdrant is supervised as in the image (the stand-in
executable of tests/appliance answers its probes; no registry here carries the real binary), and the
embedded-mode case is measured too: there the stopped `qdrant` program costs supervisord one more turn.
    scripts/bench appliance, or PYTHONPATH=. .venv/bin/python -P scripts/benchmarks/appliance.py [ROUNDS]
    (default 3 rounds of each)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import psycopg

from tests.appliance.harness import STANDIN_QDRANT, Appliance, appliance_home, base_env
from tests.services import PostgresServer, RedisServer, free_port, wait_until
from tests.worker.harness import write_jobs_file

SHUTDOWN_TIMEOUT = 5.0


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        todo.extend(int(c) for c in children)
    return total / 1024


# The job running during a busy stop: recorded when it starts (so the stop begins mid-run), then never ends
# by itself within the stop window.
JOBS = {"stubborn": "tests.worker.sample_jobs:stubborn", "gil": "tests.appliance.stop_jobs:gil"}


def one_round(redis_server: RedisServer, database_url: str, job: str | None,
              qdrant_server: bool = True) -> dict[str, float]:
    home = appliance_home()
    home.mkdir(parents=True)
    busy = job is not None
    extra: dict[str, str] = {}
    if job is not None:
        jobs = write_jobs_file(home / "jobs.toml", {"slow": {"callable": JOBS[job], "schedule": "1s",
                                                             "lock_ttl": 120}})
        extra = {"APPLIANCE_JOBS_FILE": str(jobs), "JOBS_ENABLED": "slow"}
    if qdrant_server:
        extra.update(QDRANT_BIN=str(STANDIN_QDRANT), QDRANT_URL=f"http://127.0.0.1:{free_port()}",
                     QDRANT_GRPC_PORT=str(free_port()))
    env = base_env(home, REDIS_URL=redis_server.url, DATABASE_URL=database_url, PATH="/usr/bin:/bin",
                   SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT), LOG_LEVEL="warning", **extra)
    # A run SIGKILLed in the previous round left its lease (lock_ttl 120 s), which a worker in another
    # APPLIANCE_HOME rightly waits out: each round starts from an empty Redis.
    with redis_server.client() as client:
        client.flushall()
    started, since = time.monotonic(), time.time()
    app = Appliance(env)
    try:
        if busy:  # a job holding the GIL keeps the worker's heartbeat from reaching /health: not "ok"
            wait_until(lambda: running(database_url, since), 60, "the slow job running")
        else:
            wait_until(lambda: (r := app.health()).status_code == 200 and r.json()["status"] == "ok", 60,
                       "/health ok", interval=0.05)
        to_health = time.monotonic() - started
        wanted = ("worker", "sidecar", "qdrant") if qdrant_server else ("worker", "sidecar")
        states = app.wait_states({name: "RUNNING" for name in wanted})
        # The appliance's own processes: the stand-in is not what the image would run as Qdrant.
        rss = rss_mib(app.proc.pid) - (rss_mib(states["qdrant"][1]) if qdrant_server else 0.0)
        parts = {name: rss_mib(states[name][1]) for name in ("worker", "sidecar")}
        code, to_exit = app.terminate(30)
        if code != 0:
            raise RuntimeError(f"appliance exited {code}:\n{app.output()[-2000:]}")
        return {"to_health": to_health, "rss": rss, "worker": parts["worker"], "sidecar": parts["sidecar"],
                "to_exit": to_exit}
    finally:
        app.close()


def running(database_url: str, since: float) -> bool:
    """Whether the ledger shows this round's run started (its row is written with the lease, before the body;
    a run cut by an earlier round's stop is reconciled by this round's worker, and is older anyway)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM job_runs WHERE job = 'slow' AND outcome = 'running'"
                           " AND started_at >= to_timestamp(%s)", (since,)).fetchone()
    return bool(row and row[0])


def report(label: str, values: list[float], unit: str) -> None:
    print(f"  {label}: median {statistics.median(values):.2f} {unit} "
          f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 3
    redis_server = RedisServer().start()
    postgres = PostgresServer().start()
    try:
        url = postgres.create_database("bench")
        idle = [one_round(redis_server, url, None) for _ in range(rounds)]
        busy = [one_round(redis_server, url, "stubborn") for _ in range(rounds)]
        gil = [one_round(redis_server, url, "gil") for _ in range(rounds)]
        embedded = [one_round(redis_server, url, "stubborn", qdrant_server=False) for _ in range(rounds)]
    finally:
        redis_server.cleanup()
        postgres.cleanup()
    print(f"appliance run, external Redis and PostgreSQL, supervised Qdrant (stand-in), "
          f"SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT:g}s")
    report("appliance run -> /health ok (first round migrates)", [r["to_health"] for r in idle], "s")
    report("RSS supervisord + worker + sidecar (+ listener, tail; Qdrant excluded)", [r["rss"] for r in idle], "MiB")
    report("  of which worker", [r["worker"] for r in idle], "MiB")
    report("  of which sidecar (gunicorn master + workers)", [r["sidecar"] for r in idle], "MiB")
    report("SIGTERM -> exit, idle", [r["to_exit"] for r in idle], "s")
    report("SIGTERM -> exit, a job ignoring checkpoints running", [r["to_exit"] for r in busy], "s")
    report("SIGTERM -> exit, a job holding the GIL (SIGKILL path)", [r["to_exit"] for r in gil], "s")
    report("SIGTERM -> exit, checkpoint-ignoring job, embedded Qdrant (qdrant program stopped)",
           [r["to_exit"] for r in embedded], "s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
