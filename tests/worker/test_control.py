"""Retries, dead letters, pause/resume/trigger and alerts, driven through the CLI against a running worker."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import psycopg
import pytest

from tests.services import free_port, wait_until
from tests.worker.harness import WorkerProcess, records, worker_env, write_jobs_file

pytestmark = pytest.mark.process


@pytest.fixture
def cluster(tmp_path, app_env):
    """Start a worker on the given jobs; returns (start, cli) helpers and stops the worker afterwards."""
    started: list[WorkerProcess] = []
    envs: dict[str, dict[str, str]] = {}

    def start(jobs: dict, **extra: str) -> WorkerProcess:
        env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", jobs), list(jobs), **extra)
        envs["env"] = env
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        worker.wait_for_log("worker started")
        return worker

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "appliance", *args], env=envs["env"], capture_output=True,
                                text=True, timeout=60)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    yield start, cli
    for worker in started:
        worker.terminate()  # also closes the log of a worker that has exited already


def test_failures_are_retried_with_backoff_then_dead_lettered_and_can_be_retried(cluster, redis_server):
    start, cli = cluster
    client = redis_server.client()
    start({"flaky": {"callable": "tests.worker.sample_jobs:flaky", "schedule": "1h", "max_retries": 2}},
          JOB_RETRY_BACKOFF_MS="200")
    cli("jobs", "trigger", "flaky")
    letters = wait_until(lambda: json.loads(cli("dlq", "list", "--json").stdout), 10, "a dead letter",
                         interval=0.5)  # each look is a CLI process: look less often, not for less long
    attempts = [r for r in records(client, "flaky") if r["event"] == "start"]
    assert [r["attempt"] for r in attempts] == [1, 2, 3]
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(attempts)]
    # Each gap at least its backoff (0.2 s, then 1 s, each -20%) and below the next one's least (1 s, then 5 s,
    # each -20%): that proves the sequence, and leaves a busy machine 0.56 s, then 2.8 s, of delay.
    assert 0.16 <= gaps[0] < 0.8 and 0.8 <= gaps[1] < 4.0, f"backoff 0.2 s then 1 s (±20%), got {gaps}"
    (letter,) = letters
    assert letter["job"] == "flaky" and letter["attempts"] == 3
    assert "flaky job failed on purpose" in letter["error"] and "Traceback" in letter["traceback"]
    client.hset("test:param:flaky", "fail", 0)
    cli("dlq", "retry", letter["id"])
    wait_until(lambda: [r for r in records(client, "flaky") if r["event"] == "end"], 5, "the retried run")
    assert json.loads(cli("dlq", "list", "--json").stdout) == []
    history = json.loads(cli("jobs", "history", "flaky", "--json").stdout)
    assert [h["outcome"] for h in history][:4] == ["success", "failure", "failure", "failure"]


def _slots(url: str, job: str) -> list[tuple[datetime, str]]:
    """The ledger's slots of ``job``, oldest first: (slot, outcome)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT slot, outcome FROM job_slots WHERE job = %s ORDER BY slot", (job,)).fetchall()


def _ran_slots(url: str, job: str) -> set[datetime]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT slot FROM job_runs WHERE job = %s", (job,))}


def test_pause_stops_slots_cluster_wide_and_resume_does_not_burst(cluster, redis_server, app_env):
    """Read from the ledger, not counted in a time window: while paused every slot ends ``paused`` with no
    run; after resume the next slot runs, and the paused slots stay paused (missed slots are not caught up).
    Every 1 s slot from the first paused one to the first run after resume has exactly one row."""
    start, cli = cluster
    client = redis_server.client()
    url = app_env["DATABASE_URL"]
    start({"tick": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"}})
    wait_until(lambda: records(client, "tick"), 5, "first run")
    cli("jobs", "pause", "tick")
    wait_until(lambda: [o for _, o in _slots(url, "tick")].count("paused") >= 3, 10, "three slots recorded paused")
    jobs = {j["name"]: j for j in json.loads(cli("jobs", "list", "--json").stdout)}
    assert jobs["tick"]["paused"] is True and len(jobs["tick"]["next_runs"]) == 5
    assert int(client.hget("appliance:counts", "tick:paused")) >= 3
    cli("jobs", "resume", "tick")
    paused = [s for s, o in _slots(url, "tick") if o == "paused"]
    after = wait_until(lambda: [s for s, o in _slots(url, "tick") if o == "success" and s > paused[-1]], 10,
                       "a slot run after resume")
    ledger = dict(_slots(url, "tick"))
    assert [s for s in paused if ledger[s] != "paused"] == [], "a paused slot was run after resume"
    assert not _ran_slots(url, "tick") & set(paused), "a run for a paused slot"
    assert not [r for r in records(client, "tick") if datetime.fromisoformat(r["slot"]) in paused]
    grid = [s for s in ledger if paused[0] <= s <= after[0]]
    expected = int((after[0] - paused[0]).total_seconds()) + 1
    assert len(grid) == expected, f"every slot from {paused[0]} to {after[0]} once, got {sorted(grid)}"
    assert not _ran_slots(url, "tick") & set(grid[:-1]), "a run between the pause and the first slot after resume"


def test_trigger_runs_once_now_and_jobs_run_runs_in_the_foreground(cluster, redis_server):
    start, cli = cluster
    client = redis_server.client()
    start({"daily": {"callable": "tests.worker.sample_jobs:tick", "schedule": "03:00"}})
    cli("jobs", "trigger", "daily")
    t0 = time.time()  # the trigger is queued once the command returns; the CLI's own start is not the worker's
    run = wait_until(lambda: [r for r in records(client, "daily") if r["event"] == "end"], 5, "triggered run")
    assert run[0]["t"] - t0 < 2.0 and run[0]["trigger"] == "manual"
    result = cli("jobs", "run", "daily", "--json")
    assert json.loads(result.stdout)["outcome"] == "success"
    assert [r["trigger"] for r in records(client, "daily") if r["event"] == "end"] == ["manual", "cli"]
    client.set("lock:daily", "other pid=1 started=2020-01-01T00:00:00.000Z run=x", ex=30)
    assert cli("jobs", "run", "daily", check=False).returncode == 3


def test_locks_cli_lists_and_refuses_to_clear_a_live_holder(cluster, redis_server):
    start, cli = cluster
    client = redis_server.client()
    client.hset("test:param:stubborn", "duration", 30)
    start({"stubborn": {"callable": "tests.worker.sample_jobs:stubborn", "schedule": "1h"}})
    cli("jobs", "trigger", "stubborn")
    wait_until(lambda: records(client, "stubborn"), 5, "run started")
    (held,) = json.loads(cli("locks", "list", "--json").stdout)
    assert held["key"] == "lock:stubborn" and held["holder_alive"] is True
    refused = cli("locks", "clear", "stubborn", check=False)
    assert refused.returncode == 3 and "live worker" in refused.stderr
    cli("locks", "clear", "stubborn", "--force")
    assert not client.exists("lock:stubborn")
    assert json.loads(client.zrange("appliance:audit", -1, -1)[0])["action"] == "lock.clear.force"


def test_database_down_runs_nothing_unfenced_and_the_trigger_waits(cluster, redis_server):
    """Without PostgreSQL no fencing number can be issued and no run recorded, so the job does not run at
    all (it used to run and fail): the trigger is put back and waits for the database."""
    start, cli = cluster
    client = redis_server.client()
    worker = start({"needs-db": {"callable": "tests.worker.sample_jobs:needs_db", "schedule": "1h"}},
                   DATABASE_URL=f"postgresql://appliance@127.0.0.1:{free_port()}/nothing")
    cli("jobs", "trigger", "needs-db")
    line = worker.wait_for_log("slot not run: no fence without PostgreSQL", timeout=20)
    assert line["job"] == "needs-db" and "PostgreSQL unavailable" in line["error"]
    assert records(client, "needs-db") == []
    assert client.llen("appliance:triggers:needs-db") == 1
    assert not client.exists("lock:needs-db") and not client.hexists("appliance:running", "needs-db")


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alert_once_after_threshold_and_one_recovery(cluster, redis_server):
    start, cli = cluster
    client = redis_server.client()
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    try:
        start({"flaky": {"callable": "tests.worker.sample_jobs:flaky", "schedule": "1h", "max_retries": 0}},
              ALERT_CRITICAL_THRESHOLD="2", ALERT_WEBHOOK_URL=f"http://127.0.0.1:{server.server_port}/hook")
        for n in range(1, 5):  # one run at a time: each trigger after the previous run's end
            cli("jobs", "trigger", "flaky")
            wait_until(lambda n=n: client.hget("appliance:counts", "flaky:failure") == str(n), 5, f"failure {n}")
        client.hset("test:param:flaky", "fail", 0)
        cli("jobs", "trigger", "flaky")
        wait_until(lambda: len(_Hook.received) >= 2, 5, "alert and recovery")
        time.sleep(0.3)
        assert [a["state"] for a in _Hook.received] == ["critical", "recovered"]
        assert _Hook.received[0]["consecutive_failures"] == 2
    finally:
        server.shutdown()
        server.server_close()
