"""Chaos in the Jepsen manner: three workers run a 1 s job (``tests.faults.jobs:effect``) against their own
redis-server and a durable PostgreSQL while random faults of every class hit them; afterwards the history is
checked, never the timeline: ``appliance audit`` finds no violation, and every effect in the probe job's table
is its slot's only one and the one the ledger names as the slot's success.

Each worker reaches Redis and PostgreSQL through TCP proxies of its own (``tests/proxy.py``), so a partition of
one link of one worker is a fault like any other. The fault classes:

- ``kill``: kill -9 of a worker, restarted at once in the same ``APPLIANCE_HOME``;
- ``pause``: SIGSTOP of a worker for 1.2-3 lease TTLs, then SIGCONT;
- ``redis-restart`` / ``redis-empty``: Redis shut down without saving, back with its append-only file or empty;
- ``postgres-crash``: PostgreSQL SIGKILLed, back after 0.5-2.5 s;
- ``redis-partition`` / ``postgres-partition``: one worker's link stops moving bytes, connections open, for
  0.5-3 lease TTLs (Redis) or 1-6 s (PostgreSQL);
- ``skew``: a worker restarted with its wall clock off by up to ±2 s (libfaketime), until it is restarted again;
- ``disk-full``: the filesystem under the servers' data and the workers' homes (a tmpfs of its own) filled to
  the last byte for 1-4 s.

A class that cannot run here (no libfaketime, no right to mount a tmpfs) is left out and named in the report.
Used by ``scripts/chaos`` (minutes to hours) and ``tests/faults/test_soak.py`` (two minutes in CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

from appliance.kernel.protocol.db.migrate import migrate
from tests.faults import skew as skewing
from tests.faults.conftest import JOB, Cluster
from tests.faults.jobs import SCHEMA
from tests.proxy import Proxy, through
from tests.services import PostgresServer, RedisServer
from tests.worker.harness import WorkerProcess

TTL = 1.0
WORK = "0.3"
#: The size of the tmpfs for the servers' data and the workers' homes: room for a PostgreSQL cluster's WAL.
DISK_MB = 400


@dataclass
class Report:
    seed: int
    seconds: float
    faults: Counter = field(default_factory=Counter)
    left_out: dict[str, str] = field(default_factory=dict)
    audit: dict = field(default_factory=dict)
    doubles: list = field(default_factory=list)
    unnamed: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.audit.get("ok")) and not self.doubles and not self.unnamed

    def summary(self) -> str:
        jobs = self.audit.get("jobs", {}).get(JOB, {})
        lines = [f"seed {self.seed}, {self.seconds / 60:.1f} min of faults: "
                 + ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())),
                 f"slots: {jobs.get('outcomes', {})}",
                 f"audit: {'clean' if self.audit.get('ok') else 'VIOLATIONS'}; slots with more than one effect: "
                 f"{len(self.doubles)}; effects the ledger does not name: {len(self.unnamed)}"]
        if self.left_out:
            lines.append("left out: " + "; ".join(f"{k} ({why})" for k, why in self.left_out.items()))
        for violation in self.audit.get("violations", [])[:20]:
            lines.append(f"  violation: {json.dumps(violation)}")
        return "\n".join(lines)


class Chaos:
    def __init__(self, root: Path, seed: int, workers: int = 3) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.report = Report(seed, 0.0)
        root.chmod(0o755)  # PostgreSQL's own user must reach its data directory below
        self.disk = root / "disk"
        self.disk.mkdir(parents=True, exist_ok=True)
        self.mounted = _mount_tmpfs(self.disk, DISK_MB)
        self.workers: list[WorkerProcess] = []
        self.links: list[tuple[Proxy, Proxy]] = []
        try:
            self._setup(workers)
        except BaseException:
            self.close()
            raise

    def _setup(self, workers: int) -> None:
        if not self.mounted:
            self.report.left_out["disk-full"] = "cannot mount a tmpfs here"
        if skewing.libfaketime() is None:
            self.report.left_out["skew"] = "libfaketime is not installed (Debian package faketime)"
        self.redis = RedisServer()
        self.postgres = PostgresServer(("-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on"))
        if self.mounted:  # the servers' data on the small filesystem too
            self.redis.dir = _moved(self.redis.dir, self.disk / "redis")
            self.postgres.dir = _moved(self.postgres.dir, self.disk / "pg")
            self.postgres.data = self.postgres.dir / "data"
        self.redis.start()
        self.postgres.start()
        url = self.postgres.create_database("chaos")
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        env = {"APPLIANCE_HOME": str(self.disk / "home"), "REDIS_URL": self.redis.url, "DATABASE_URL": url,
               "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
        self.cluster = Cluster(self.root, env, schedule="1s", lock_ttl=TTL)
        self.cluster.sql(SCHEMA)
        self.links = [(Proxy(("127.0.0.1", self.redis.port), f"redis-{i}"),
                       Proxy(("127.0.0.1", self.postgres.port), f"pg-{i}")) for i in range(workers)]
        self.workers = [self._start(i) for i in range(workers)]
        self.cluster.wait_mark("committed", timeout=60)

    # -- workers ---------------------------------------------------------------------------------------
    def _start(self, i: int, skew: float = 0.0) -> WorkerProcess:
        redis_link, pg_link = self.links[i]
        extra = {"REDIS_URL": f"redis://127.0.0.1:{redis_link.port}/0",
                 "DATABASE_URL": through(self.cluster.db, pg_link), "DATABASE_TIMEOUT": "2",
                 "APPLIANCE_HOME": str(self.disk / f"home-{i}"), "FAULT_WORK": WORK}
        extra.update(skewing.skewed(skew))
        worker = WorkerProcess(self.cluster.env(**extra), self.root / f"worker-{i}.log")
        self.cluster.workers.append(worker)
        return worker

    def _restart(self, i: int, skew: float = 0.0) -> None:
        self.workers[i].kill()
        self.workers[i] = self._start(i, skew)

    # -- faults ----------------------------------------------------------------------------------------
    #: Every fault class, by name.
    KINDS = ("kill", "pause", "redis-restart", "redis-empty", "postgres-crash", "redis-partition",
             "postgres-partition", "skew", "disk-full")

    def kinds(self) -> dict[str, Callable[[], str]]:
        kinds = {"kill": self._kill, "pause": self._pause, "redis-restart": lambda: self._redis_outage(False),
                 "redis-empty": lambda: self._redis_outage(True), "postgres-crash": self._postgres_crash,
                 "redis-partition": lambda: self._partition(0, TTL * 0.5, TTL * 3),
                 "postgres-partition": lambda: self._partition(1, 1.0, 6.0), "skew": self._skew,
                 "disk-full": self._disk_full}
        return {kind: action for kind, action in kinds.items() if kind not in self.report.left_out}

    def _victim(self) -> int:
        return self.rng.randrange(len(self.workers))

    def _kill(self) -> str:
        i = self._victim()
        self._restart(i)
        return f"kill -9 worker {i}"

    def _pause(self) -> str:
        i, seconds = self._victim(), self.rng.uniform(1.2, 3.0) * TTL
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.workers[i].pid, signal.SIGSTOP)
            time.sleep(seconds)
            os.kill(self.workers[i].pid, signal.SIGCONT)
        return f"SIGSTOP worker {i} for {seconds:.1f} s"

    def _redis_outage(self, empty: bool) -> str:
        with contextlib.suppress(redis.RedisError):
            self.redis.client().shutdown(nosave=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            assert self.redis.proc is not None
            self.redis.proc.wait(5)
        self.redis.kill()
        if empty:  # the append-only file too: Redis comes back empty, leases and markers gone
            shutil.rmtree(self.redis.dir / "appendonlydir", ignore_errors=True)
        time.sleep(self.rng.uniform(0.5, 2.5))
        self._ensure_up()
        return f"redis outage ({'empty' if empty else 'with its data'})"

    def _postgres_crash(self) -> str:
        self.postgres.stop(signal.SIGKILL)
        down = self.rng.uniform(0.5, 2.5)
        time.sleep(down)
        self._ensure_up()
        return f"postgres crash ({down:.1f} s down)"

    def _partition(self, link: int, least: float, most: float) -> str:
        i, seconds = self._victim(), self.rng.uniform(least, most)
        proxy = self.links[i][link]
        proxy.cut()
        time.sleep(seconds)
        proxy.heal()
        return f"{'redis' if link == 0 else 'postgres'} link of worker {i} cut for {seconds:.1f} s"

    def _skew(self) -> str:
        i = self._victim()
        skew = 0.0 if self.rng.random() < 0.25 else self.rng.choice([-1, 1]) * self.rng.uniform(0.3, 2.0)
        self._restart(i, skew)
        return f"worker {i} restarted with its clock {skew:+.1f} s off"

    def _disk_full(self) -> str:
        seconds = self.rng.uniform(1.0, 4.0)
        filler = self.disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            block = b"\0" * (1 << 20)
            while True:
                out.write(block)
                out.flush()
        with contextlib.suppress(OSError), (self.disk / "filler-small").open("wb") as out:
            while True:  # the last bytes, below a block's size
                out.write(b"\0" * 512)
                out.flush()
        time.sleep(seconds)
        filler.unlink(missing_ok=True)
        (self.disk / "filler-small").unlink(missing_ok=True)
        self._ensure_up()
        return f"disk full for {seconds:.1f} s"

    def _ensure_up(self) -> None:
        """Restart a server that died (as supervisord does in the appliance)."""
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()
        if self.postgres.proc is None or self.postgres.proc.poll() is not None:
            self.postgres.start()

    # -- the run ---------------------------------------------------------------------------------------
    def run(self, seconds: float, log: Callable[[str], None] = lambda line: None) -> Report:
        kinds = self.kinds()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(self.rng.uniform(1.0, 3.0))
            kind = self.rng.choice(sorted(kinds))
            log(f"{time.monotonic() - started:7.1f} s  {kinds[kind]()}")
            self.report.faults[kind] += 1
            self._ensure_up()
            for i, worker in enumerate(self.workers):
                if not worker.alive():  # exited on its own (a full disk at start, say): supervisord restarts it
                    self.workers[i] = self._start(i)
        self.report.seconds = time.monotonic() - started
        return self.report

    def check(self) -> Report:
        """Let the last fault settle, stop the workers, then check the history."""
        time.sleep(3)
        until = datetime.now(UTC)
        self.cluster.stop_all()
        _, self.report.audit = self.cluster.audit("--since", "24h", "--until", until.isoformat())
        self.report.doubles = self.cluster.sql(
            "SELECT slot, count(*) FROM fault_effects GROUP BY slot HAVING count(*) > 1")
        self.report.unnamed = self.cluster.sql(
            "SELECT e.slot, e.run_id FROM fault_effects e LEFT JOIN job_slots s ON s.job = e.job AND s.slot = e.slot "
            "AND s.run_id = e.run_id AND s.outcome = 'success' WHERE s.job IS NULL AND e.slot <= %s", (until,))
        return self.report

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        for link in self.links:
            for proxy in link:
                proxy.close()
        for server in (getattr(self, "redis", None), getattr(self, "postgres", None)):
            if server is not None:
                server.cleanup()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.disk)], check=False)


def _mount_tmpfs(path: Path, megabytes: int) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


def _moved(old: Path, new: Path) -> Path:
    """A server's temp dir moved onto the chaos filesystem (unix socket paths stay short: the root is short)."""
    shutil.rmtree(old, ignore_errors=True)
    new.mkdir(parents=True)
    return new
