"""A soak in the Jepsen manner: three workers run a 1 s job while random faults hit them (kill -9 and an
immediate restart, SIGSTOP past the lease, Redis SHUTDOWN NOSAVE with and without its data coming back,
PostgreSQL crashed with SIGKILL and restarted: its own durable cluster).
Nothing is asserted about the timeline; afterwards the history is checked: ``appliance audit`` finds no
violation, and every effect in the table is its slot's only one and the one the ledger names.

``SOAK_SECONDS`` sets the length (default 75); ``SOAK_SEED`` replays a run (the seed is printed)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import time
from datetime import UTC, datetime

import pytest
import redis

pytestmark = pytest.mark.process

SECONDS = float(os.environ.get("SOAK_SECONDS", "75"))


def _redis_outage(redis_server, rng: random.Random) -> str:
    with contextlib.suppress(redis.ConnectionError):
        redis_server.client().shutdown(nosave=True)
    redis_server.proc.wait(5)
    lose = rng.random() < 0.5
    if lose:  # the append-only file too: Redis comes back empty, leases and markers gone
        shutil.rmtree(redis_server.dir / "appendonlydir", ignore_errors=True)
    time.sleep(rng.uniform(0.5, 2.5))
    redis_server.start()
    return f"redis outage ({'empty' if lose else 'with its data'})"


def _postgres_crash(postgres, rng: random.Random) -> str:
    postgres.stop(signal.SIGKILL)
    down = rng.uniform(0.5, 2.5)
    time.sleep(down)
    postgres.start()
    return f"postgres crash ({down:.1f}s down)"


def _kill_and_restart(cluster, rng: random.Random) -> str:
    victim = rng.choice([w for w in cluster.workers if w.alive()])
    victim.kill()
    cluster.start(FAULT_WORK="0.3")
    return f"kill -9 {victim.pid}"


def _pause(cluster, rng: random.Random) -> str:
    victim = rng.choice([w for w in cluster.workers if w.alive()])
    seconds = rng.uniform(1.2, 3.0)  # the lease is 1 s
    os.kill(victim.pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(victim.pid, signal.SIGCONT)
    return f"SIGSTOP {victim.pid} for {seconds:.1f}s"


@pytest.mark.long
def test_random_faults_leave_a_history_the_audit_finds_clean(durable_cluster, redis_server, durable_postgres):
    cluster = durable_cluster
    seed = int(os.environ.get("SOAK_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"soak seed {seed}")
    cluster.schedule = "1s"
    for _ in range(3):
        cluster.start(FAULT_WORK="0.3")
    cluster.wait_mark("committed")
    faults = []
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        kind = rng.choice([_kill_and_restart, _pause, _redis_outage, _postgres_crash])
        target = {_redis_outage: redis_server, _postgres_crash: durable_postgres}.get(kind, cluster)
        faults.append(kind(target, rng))
    print("faults:", "; ".join(faults))
    time.sleep(3)
    until = datetime.now(UTC)
    cluster.stop_all()
    report = cluster.assert_audit_clean(since="30m", until=until.isoformat())
    counts = report["jobs"]["effect"]
    assert counts["outcomes"].get("success", 0) >= SECONDS / 4, counts
    doubles = cluster.sql("SELECT slot, count(*) FROM fault_effects GROUP BY slot HAVING count(*) > 1")
    assert doubles == [], f"slots with more than one effect: {doubles}"
    unnamed = cluster.sql("SELECT e.slot, e.run_id FROM fault_effects e LEFT JOIN job_slots s ON s.job = e.job "
                          "AND s.slot = e.slot AND s.run_id = e.run_id AND s.outcome = 'success' "
                          "WHERE s.job IS NULL AND e.slot <= %s", (until,))
    assert unnamed == [], f"effects the ledger does not name as their slot's success: {unnamed}"
