"""Process tests: real worker processes against a real redis-server, as Supervisor would run them."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.services import wait_until
from tests.worker.harness import WorkerProcess, records, worker_env, write_jobs_file

pytestmark = pytest.mark.process

TICK = {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"}


@pytest.fixture
def start(tmp_path, app_env):
    """``start(n, jobs, **env)`` starts n workers; any still running when the test ends are killed."""
    started: list[WorkerProcess] = []

    def make(n: int, jobs: dict, **extra: str) -> list[WorkerProcess]:
        jobs_file = write_jobs_file(tmp_path / "jobs.toml", jobs)
        env = worker_env(app_env, jobs_file, list(jobs), **extra)
        workers = [WorkerProcess(env, tmp_path / f"worker-{len(started) + i}.log") for i in range(n)]
        started.extend(workers)
        return workers

    yield make
    for worker in started:
        worker.kill()


@pytest.mark.long
@pytest.mark.timeout(150)
def test_three_replicas_run_each_slot_exactly_once_for_60s(start, redis_server):
    """3 workers, a 1 s job that takes 0.2 s, 60 s: every slot once, never two runs at the same time."""
    workers = start(3, {"tick": TICK})
    for w in workers:
        w.wait_for_log("worker started")
    first_full = time.time() + 1.0
    time.sleep(60)
    last_full = time.time() - 1.0
    for w in workers:
        code, _ = w.terminate()
        assert code == 0
    runs = records(redis_server.client(), "tick")
    starts = [r for r in runs if r["event"] == "start"]
    slots = Counter(r["slot"] for r in starts)
    assert max(slots.values()) == 1, f"slots run more than once: {[s for s, c in slots.items() if c > 1]}"
    window = [s for s in slots if first_full <= datetime.fromisoformat(s).timestamp() <= last_full]
    assert len(window) >= 55, f"expected every slot of ~58 s, got {len(window)}"
    stamps = sorted(datetime.fromisoformat(s).timestamp() for s in window)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(abs(g - 1.0) < 1e-6 for g in gaps), f"missing slots: gaps {sorted(set(gaps))}"
    assert len({r["pid"] for r in starts}) >= 2, "the slots should be spread over replicas"
    by_time = sorted(runs, key=lambda r: r["t"])
    depth = 0
    for r in by_time:
        depth += 1 if r["event"] == "start" else -1
        assert depth <= 1, "two runs of the job overlapped"


@pytest.mark.timeout(90)
def test_kill9_of_holder_lets_another_replica_take_the_slot(start, redis_server):
    """The holder dies mid-run: another replica re-runs that slot within lock TTL + grace."""
    client = redis_server.client()
    client.hset("test:param:slow", "duration", 30)
    jobs = {"slow": {"callable": "tests.worker.sample_jobs:tick", "schedule": "20s", "lock_ttl": 2, "grace": 5}}
    workers = start(2, jobs, HEARTBEAT_TTL="1")
    for w in workers:
        w.wait_for_log("worker started")
    both_up = time.time()
    first = wait_until(lambda: [r for r in records(client, "slow") if r["event"] == "start"
                                and datetime.fromisoformat(r["slot"]).timestamp() > both_up], 30, "first run")[0]
    holder = next(w for w in workers if w.pid == first["pid"])
    other = next(w for w in workers if w is not holder)
    killed_at = time.time()
    holder.kill()
    taken = wait_until(lambda: [r for r in records(client, "slow")
                                if r["event"] == "start" and r["pid"] == other.pid and r["slot"] == first["slot"]],
                       2 + 5 + 5, "takeover of the slot")[0]
    assert taken["t"] - killed_at <= 2 + 5 + 1.0
    code, _ = other.terminate()
    assert code == 0


@pytest.mark.timeout(60)
def test_operator_del_of_a_stuck_lock_lets_the_next_slot_run(start, redis_server):
    client = redis_server.client()
    client.set("lock:tick", "dead-host pid=1 started=2020-01-01T00:00:00.000Z run=stuck", ex=3600)
    (worker,) = start(1, {"tick": TICK})
    worker.wait_for_log("worker started")
    wait_until(lambda: int(client.hget("appliance:counts", "tick:skipped_overlap") or 0) >= 2, 10, "skips")
    assert records(client, "tick") == []
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "DEL", "lock:tick"], check=True, capture_output=True)
    wait_until(lambda: [r for r in records(client, "tick") if r["event"] == "end"], 5, "a run after DEL")
    code, _ = worker.terminate()
    assert code == 0


@pytest.mark.timeout(60)
def test_worker_survives_a_redis_restart_and_resumes(start, app_env, redis_server):
    """Fail closed: while Redis is down slots are skipped and counted, without crash or busy loop."""
    client = redis_server.client()
    client.hset("test:param:tick", "duration", 0.5)
    (worker,) = start(1, {"tick": TICK})
    worker.wait_for_log("worker started")
    wait_until(lambda: records(client, "tick"), 5, "first run")
    redis_server.kill()
    wait_until(lambda: _runs_counted(app_env, "tick", "skipped_unavailable") >= 1, 10, "a skipped slot counted")
    cpu_before = _cpu_seconds(worker.pid)
    time.sleep(2)  # the window in which a spinning worker would burn CPU
    assert worker.alive()
    assert _cpu_seconds(worker.pid) - cpu_before < 0.5, "the worker spins while Redis is down"
    wait_until(lambda: _runs_counted(app_env, "tick", "skipped_unavailable") >= 2, 10, "skipped slots counted")
    redis_server.start()
    restarted = time.time()
    client = redis_server.client()
    wait_until(lambda: [r for r in records(client, "tick") if r["event"] == "end" and r["t"] > restarted + 0.5],
               10, "runs after the restart")
    skipped = "Redis unavailable: slots are skipped until it returns"
    assert any(line.get("msg") == skipped for line in worker.log_lines())
    code, _ = worker.terminate()
    assert code == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("job", ["steps", "stubborn"])
def test_sigterm_during_a_run_exits_0_within_the_bound_and_releases_the_lock(start, redis_server, job):
    """A job that checkpoints stops at once; one that ignores checkpoints is abandoned at SHUTDOWN_TIMEOUT."""
    client = redis_server.client()
    client.hset(f"test:param:{job}", mapping={"steps": 300, "step": 0.1, "duration": 60})
    jobs = {job: {"callable": f"tests.worker.sample_jobs:{job}", "schedule": "1s", "lock_ttl": 60}}
    (worker,) = start(1, jobs, SHUTDOWN_TIMEOUT="2")
    wait_until(lambda: records(client, job), 15, "the run started")
    assert client.exists(f"lock:{job}")
    code, seconds = worker.terminate()
    assert code == 0
    assert seconds <= 2 + 1.5
    assert not client.exists(f"lock:{job}")
    if job == "steps":
        assert client.hget("appliance:counts", f"{job}:cancelled") == "1"


@pytest.mark.timeout(60)
def test_a_run_longer_than_the_ttl_keeps_its_lock(start, tmp_path, app_env, redis_server):
    client = redis_server.client()
    client.hset("test:param:steps", mapping={"steps": 35, "step": 0.1})
    jobs = {"steps": {"callable": "tests.worker.sample_jobs:steps", "schedule": "1h", "lock_ttl": 1}}
    (worker,) = start(1, jobs)
    worker.wait_for_log("worker started")
    subprocess.run([*_cli(), "jobs", "trigger", "steps"], env=_env(tmp_path, app_env, jobs),
                   check=True, capture_output=True)
    wait_until(lambda: client.get("lock:steps"), 5, "the lease")
    token = client.get("lock:steps")
    seen = set()
    deadline = time.time() + 3.0
    while time.time() < deadline:
        seen.add(client.get("lock:steps"))
        time.sleep(0.05)
    assert seen == {token}, "the lease changed or lapsed during a run 3x longer than its TTL"
    # The job's own end record comes before the runner counts the run: wait for the count.
    wait_until(lambda: client.hget("appliance:counts", "steps:success") == "1", 5, "the run's end, counted")
    assert client.hget("appliance:counts", "steps:lease_lost") is None
    worker.terminate()


@pytest.mark.timeout(60)
def test_lock_deleted_during_a_run_cancels_it_at_the_next_checkpoint(start, tmp_path, app_env, redis_server):
    client = redis_server.client()
    client.hset("test:param:steps", mapping={"steps": 200, "step": 0.05})
    jobs = {"steps": {"callable": "tests.worker.sample_jobs:steps", "schedule": "1h", "lock_ttl": 1.5}}
    (worker,) = start(1, jobs)
    worker.wait_for_log("worker started")
    subprocess.run([*_cli(), "jobs", "trigger", "steps"], env=_env(tmp_path, app_env, jobs), check=True,
                   capture_output=True)
    wait_until(lambda: records(client, "steps"), 5, "the run started")
    client.delete("lock:steps")
    # Stopped at its next checkpoint and recorded as what it is: a run that lost its lease.
    wait_until(lambda: client.hget("appliance:counts", "steps:lease_lost") == "1", 3, "cancellation")
    # Counted once: the run's outcome is the lost lease, and the runner adds no count of its own for it.
    assert worker.wait_for_log("run ended")["outcome"] == "lease_lost"
    assert client.hget("appliance:counts", "steps:lease_lost") == "1"
    assert client.hget("appliance:counts", "steps:lock_lost") is None, "the old counter is no longer written"
    assert not [r for r in records(client, "steps") if r["event"] == "end"]
    worker.terminate()


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "appliance"]


def _env(tmp_path, app_env, jobs) -> dict[str, str]:
    return worker_env(app_env, tmp_path / "jobs.toml", list(jobs))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runs_counted(app_env: dict[str, str], job: str, outcome: str) -> float:
    """``appliance_job_runs_total{job, outcome}`` aggregated from the worker's multiprocess metrics files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(Path(app_env["APPLIANCE_HOME"]) / "metrics"))
    return registry.get_sample_value("appliance_job_runs_total", {"job": job, "outcome": outcome}) or 0.0
