"""Partitions as production has them: each worker reaches Redis (or PostgreSQL) through a TCP proxy of its own
(``tests/proxy.py``) that the test makes stop moving bytes while every connection stays open, so no socket
timeout fires and no keepalive fails. Real workers, real redis-server and PostgreSQL; the job is
``tests.faults.jobs:steady``, which keeps its checkpoints and notes every step with the time in a trace file.

What must hold: a holder cut off from Redis stops its job before a replica elsewhere starts the slot's takeover
(its lease's deadline is watched on the monotonic clock, not through the cut connection); a holder cut off
from PostgreSQL alone gives its run up within ``DATABASE_TIMEOUT`` instead of waiting out the partition, and the
slot still ends with one effect and one ledger row. The history is checked with ``appliance audit``.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.faults.conftest import Cluster
from tests.proxy import Proxy, through
from tests.services import wait_until

pytestmark = [pytest.mark.process, pytest.mark.long, pytest.mark.timeout(300)]

#: Cuts per run of the Redis test, spread evenly over one renewal period (a third of the TTL).
REPS = int(os.environ.get("PARTITION_REPS", "6"))


@dataclass(frozen=True)
class Note:
    slot: str
    run_id: str
    pid: int
    event: str
    at: float


def notes(trace: Path) -> list[Note]:
    if not trace.exists():
        return []
    out = []
    for line in trace.read_text().splitlines():
        slot, run_id, pid, event, at = line.split()
        out.append(Note(slot, run_id, int(pid), event, float(at)))
    return out


def first(trace: Path, event: str, **match) -> Note | None:
    for note in notes(trace):
        if note.event == event and all(getattr(note, key) == value for key, value in match.items()):
            return note
    return None


def steady_cluster(cluster: Cluster, schedule: str, ttl: float) -> Path:
    cluster.callable = "tests.faults.jobs:steady"
    cluster.schedule, cluster.lock_ttl = schedule, ttl
    return cluster.tmp / "trace"


def effects_per_slot(cluster: Cluster) -> dict[str, int]:
    counts: dict[str, int] = {}
    for slot, *_ in cluster.effects():
        counts[slot.isoformat()] = counts.get(slot.isoformat(), 0) + 1
    return counts


def test_a_holder_cut_off_from_redis_stops_before_the_takeover_starts(cluster, redis_server):
    """Two workers, each through its own proxy to Redis. In each slot the holder's path is cut at a different
    phase of its renewal cycle; the other worker takes the slot over once the lease expires. Every time, the
    holder's last step is noted before the takeover's first."""
    ttl = 3.0
    # Runs of 4 s: long enough that a holder cut at any phase reaches its lease's deadline before its end.
    trace = steady_cluster(cluster, "12s", ttl)
    proxies: dict[int, Proxy] = {}
    for i in range(2):
        proxy = Proxy(("127.0.0.1", redis_server.port), f"redis-{i}")
        worker = cluster.start(f"home-{i}", REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0", FAULT_TRACE=str(trace),
                               FAULT_WORK="4")
        proxies[worker.pid] = proxy
    margins, stops_after_cut = [], []
    seen: set[str] = set()
    try:
        for rep in range(REPS):
            margin, stop_after_cut = _cut_holder(trace, proxies, seen, 0.1 + rep * (ttl / 3) / REPS, ttl)
            margins.append(margin)
            stops_after_cut.append(stop_after_cut)
            assert margin > 0, f"cut {rep + 1}: the takeover started {-margin:.3f} s before the holder stopped"
    finally:
        cluster.stop_all()
        for proxy in proxies.values():
            proxy.close()
    report = (f"margins (takeover start - holder stop), s: {[round(m, 3) for m in margins]}; min "
              f"{min(margins):.3f}, median {statistics.median(margins):.3f}; holder stopped "
              f"{min(stops_after_cut):.2f}-{max(stops_after_cut):.2f} s after the cut")
    print(report)
    assert all(margin > 0 for margin in margins), report
    assert all(count == 1 for count in effects_per_slot(cluster).values()), effects_per_slot(cluster)
    cluster.assert_audit_clean()


def test_a_holder_cut_off_from_postgresql_gives_its_run_up_and_the_slot_ends_once(cluster):
    """The holder reaches PostgreSQL through a proxy, Redis directly. Cut during the run for 8 s with
    DATABASE_TIMEOUT=2: the run's final transaction gets no answer and fails within the timeout (it does not
    wait out the partition, holding its lease), and after the partition the slot ends with one effect and one
    ledger row."""
    trace = steady_cluster(cluster, "20s", 2.0)
    db = cluster.app_env["DATABASE_URL"]
    server = _pg_upstream(db)
    proxy = Proxy(server, "postgres")
    try:
        holder_env = dict(DATABASE_URL=through(db, proxy), FAULT_TRACE=str(trace), FAULT_WORK="1.5",
                          DATABASE_TIMEOUT="2")
        holder = cluster.start("home-0", **holder_env)
        started = wait_until(lambda: first(trace, "start", pid=holder.pid), 30, "the holder's run")
        proxy.cut()
        cluster.start("home-1", FAULT_TRACE=str(trace), FAULT_WORK="1.5")
        cut_for = 8.0
        wait_until(lambda: _since(started) >= 1.5 + cut_for - 0.5, 20, "the partition's end", 0.05)
        stopped = first(trace, "stop", run_id=started.run_id)
        healed_at = _wall()
        proxy.heal()
        assert stopped is not None and stopped.at < healed_at, "the run waited out the partition"
        wait_until(lambda: cluster.slot_row(_slot(started)), 40, "the slot's ledger row")
        row = cluster.slot_row(_slot(started))
        assert row is not None
        effects = cluster.effects(_slot(started))
        assert len(effects) == (1 if row[0] == "success" else 0), (row, effects)
    finally:
        cluster.stop_all()
        proxy.close()
    cluster.assert_audit_clean()


# -- helpers -------------------------------------------------------------------------------------------------
def _cut_holder(trace: Path, proxies: dict[int, Proxy], seen: set[str], phase: float,
                ttl: float) -> tuple[float, float]:
    """Wait for the run of a new slot, cut its worker from Redis ``phase`` seconds into it, heal once the other
    worker has started the takeover. Returns (takeover's start - holder's stop, holder's stop - the cut)."""
    holder = wait_until(lambda: next((n for n in notes(trace) if n.event == "start" and n.slot not in seen), None),
                        20, "a run of a new slot")
    seen.add(holder.slot)
    wait_until(lambda: _since(holder) >= phase, 5, "the cut's phase", 0.005)
    cut_at = _wall()
    proxies[holder.pid].cut()
    try:
        takeover = wait_until(lambda: first(trace, "start", slot=holder.slot, pid=_other(proxies, holder.pid)),
                              ttl + 6, "the takeover's start")
    finally:
        proxies[holder.pid].heal()
    stop = wait_until(lambda: first(trace, "stop", run_id=holder.run_id), 15, "the holder's stop")
    return takeover.at - stop.at, stop.at - cut_at


def _wall() -> float:
    return time.time()


def _since(note: Note) -> float:
    return _wall() - note.at


def _other(proxies: dict[int, Proxy], pid: int) -> int:
    return next(other for other in proxies if other != pid)


def _slot(note: Note) -> datetime:
    return datetime.fromisoformat(note.slot)


def _pg_upstream(url: str) -> Path:
    """The unix socket of the test PostgreSQL that ``url`` names (``host=DIR`` and ``port=N``)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    port = query.get("port", [str(parts.port or 5432)])[0]
    return Path(query["host"][0]) / f".s.PGSQL.{port}"
