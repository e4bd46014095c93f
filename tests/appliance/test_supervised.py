"""``appliance run`` end to end: supervisord with the embedded Redis and PostgreSQL, a Qdrant program, the
worker and the sidecar, driven with the real ``supervisorctl``.

The supervised-Qdrant path runs ``tests/appliance/qdrant_standin.py``, a STAND-IN for the Qdrant server
binary that answers its probe endpoints (no registry here carries the real binary); the embedded path uses
Qdrant Edge. Redis and PostgreSQL are real servers: embedded ones started by the appliance
itself, or the fixtures' servers for the "external" tests.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import redis

from tests.appliance.harness import APP_PROGRAMS, STANDIN_QDRANT, Appliance, appliance_home, base_env
from tests.services import free_port, wait_until
from tests.worker.harness import write_jobs_file

pytestmark = pytest.mark.process

TICK = {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s", "lock_ttl": 3}


def _runs(client: redis.Redis) -> list[dict]:
    return [json.loads(v) for v in client.lrange("test:runs", 0, -1)]


def _wait_run_by(client: redis.Redis, pid: int, timeout: float = 20) -> dict:
    """A completed run of the tick job by worker process ``pid``."""
    return wait_until(lambda: next((r for r in _runs(client) if r["pid"] == pid and r["event"] == "end"), None),
                      timeout, f"a run by worker pid {pid}")


@pytest.fixture
def appliances():
    started: list[Appliance] = []

    def start(env: dict[str, str]) -> Appliance:
        app = Appliance(env)
        started.append(app)
        return app

    yield start
    for app in started:
        app.close()


def test_embedded_services_supervised_qdrant_restart_and_sigterm(appliances, tmp_path):
    """Embedded Redis and PostgreSQL plus the stand-in Qdrant: every program RUNNING, started in priority
    order; /health ok; supervisorctl from the repo root; restart worker; SIGTERM stops all in order, in time,
    with exit 0 and no process left."""
    home = appliance_home()
    jobs = write_jobs_file(tmp_path / "jobs.toml", {"tick": TICK})
    env = base_env(home, QDRANT_BIN=str(STANDIN_QDRANT), QDRANT_URL=f"http://127.0.0.1:{free_port()}",
                   APPLIANCE_JOBS_FILE=str(jobs), JOBS_ENABLED="tick", SHUTDOWN_TIMEOUT="2")
    app = appliances(env)
    states = app.wait_states({name: "RUNNING" for name in (*APP_PROGRAMS, "logs", "fatal")})
    assert app.events("spawned")[-5:] == list(APP_PROGRAMS)

    health = app.wait_health()
    assert health["status"] == "ok", health
    assert health["services"] == {"redis": "connected", "database": "connected", "qdrant": "healthy"}

    with redis.Redis(unix_socket_path=str(home / "run" / "redis.sock"), decode_responses=True) as client:
        _wait_run_by(client, states["worker"][1])
        restarted = app.ctl("restart", "worker")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "worker: stopped" in restarted.stdout and "worker: started" in restarted.stdout
        new_pid = app.wait_states({"worker": "RUNNING"})["worker"][1]
        assert new_pid != states["worker"][1]
        _wait_run_by(client, new_pid)

    assert (home / "log" / "worker.log").read_text().count('"msg": "worker started"') == 2
    qdrant = app.ctl("restart", "qdrant")
    assert "qdrant: started" in qdrant.stdout, qdrant.stdout + qdrant.stderr
    assert app.wait_states({"qdrant": "RUNNING"})["qdrant"][1] != states["qdrant"][1]
    assert app.zombies() == [], "supervisord (PID 1 in a container) must reap every child"
    code, seconds = app.terminate()
    assert code == 0, app.output()[-3000:]
    assert seconds < 10, f"stop took {seconds:.1f}s"
    stopped = app.events("stopped", after="received SIGTERM")
    # In waves: the appliance's programs together, then the embedded services they needed to the end.
    assert set(stopped[:3]) == {"qdrant", "worker", "sidecar"} and set(stopped[3:5]) == {"redis", "postgres"}
    assert app.leftovers() == []
    assert '"process": "worker"' in app.output(), "worker lines must reach supervisord's stdout"


def test_kill_9_worker_is_restarted_and_embedded_qdrant(appliances, tmp_path, redis_server, migrated_db):
    """External Redis and PostgreSQL, no Qdrant binary: the qdrant program stays stopped and /health says
    embedded; a worker killed with SIGKILL is restarted by supervisord and its slots continue."""
    home = appliance_home()
    jobs = write_jobs_file(tmp_path / "jobs.toml", {"tick": TICK})
    env = base_env(home, REDIS_URL=redis_server.url, DATABASE_URL=migrated_db, APPLIANCE_JOBS_FILE=str(jobs),
                   JOBS_ENABLED="tick", PATH="/usr/bin:/bin")
    app = appliances(env)
    states = app.wait_states({"worker": "RUNNING", "sidecar": "RUNNING"})
    assert states["qdrant"][0] == "STOPPED" and "redis" not in states and "postgres" not in states
    assert "embedded Qdrant Edge storage" in app.output()
    assert app.wait_health()["services"]["qdrant"] == "embedded"

    client = redis_server.client()
    try:
        first = states["worker"][1]
        _wait_run_by(client, first)
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: (s := app.status()["worker"])[0] == "RUNNING" and s[1] != first and s[1],
                            30, "the worker restarted")
        _wait_run_by(client, second)
    finally:
        client.close()
    assert "worker (terminated by SIGKILL; not expected)" in "\n".join(app.supervisord_log())
    code, _ = app.terminate()
    assert code == 0
    assert app.leftovers() == []


def test_worker_crashing_at_start_goes_fatal_and_stops_the_appliance(appliances, tmp_path, redis_server,
                                                                     migrated_db):
    """A worker that exits at every start goes FATAL; the listener stops supervisord, which exits 3."""
    home = appliance_home()
    jobs = write_jobs_file(tmp_path / "jobs.toml", {"crash": {"callable": "tests.appliance.crash_jobs:noop",
                                                              "schedule": "1m"}})
    env = base_env(home, REDIS_URL=redis_server.url, DATABASE_URL=migrated_db, APPLIANCE_JOBS_FILE=str(jobs),
                   JOBS_ENABLED="crash", PATH="/usr/bin:/bin")
    app = appliances(env)
    started = time.monotonic()
    code = app.proc.wait(90)
    assert code == 3, app.output()[-3000:]
    log = "\n".join(app.supervisord_log())
    assert "gave up: worker entered FATAL state" in log
    assert "program worker went FATAL" in app.output()
    assert json.loads((home / "run" / "fatal.json").read_text())["program"] == "worker"
    assert time.monotonic() - started < 60
    assert app.leftovers() == []
