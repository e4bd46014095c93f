"""``appliance run`` with APPLIANCE_HOME on a small filesystem of its own (a tmpfs) that fills to the last
byte and inode while jobs run, and PostgreSQL keeps writing WAL into it; then space returns.

What must hold: ``/health`` answers throughout, 200 ``degraded`` naming the disk and what fails because of it;
no program goes FATAL and the appliance does not stop; nothing committed before is lost; once the filler is
removed everything recovers with no one's help, and ``appliance audit`` finds every slot of the period
recorded (those of the full disk with the reason they did not run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from appliance.supervise import embedded
from tests.appliance.harness import REPO, Appliance, appliance_home, base_env
from tests.faults.jobs import SCHEMA
from tests.services import wait_until
from tests.tmpfs import SmallDisk, small_disk
from tests.worker.harness import write_jobs_file

pytestmark = pytest.mark.process

#: Every 2 s, its effect and ledger row committed in PostgreSQL (``tests.faults.jobs``).
EFFECT = {"callable": "tests.faults.jobs:effect", "schedule": "2s", "lock_ttl": 5}
#: How long the disk stays full: several slots, and PostgreSQL's stop and wait.
FULL_FOR = 16.0
#: /health is cached up to twice HEALTH_CACHE_TTL; the probes taken while the disk was filling may say so late.
SETTLE = 2.0
#: More WAL than a segment, so PostgreSQL must create a new one on the full disk (and stops when it cannot).
WAL_BYTES = 40 * 1024 * 1024


@pytest.fixture
def home_disk() -> Iterator[SmallDisk]:
    """A 200 MB tmpfs as APPLIANCE_HOME: about 50 MB are used once the appliance runs (the PostgreSQL
    cluster 47 MB), so room returns well above the 32 MiB below which the disk counts as full."""
    home = appliance_home()
    try:
        with small_disk(home, size="200M", inodes=4096) as disk:
            yield disk
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)


def _sql(url: str, query: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def _poll_health(app: Appliance, seconds: float) -> list[tuple[float, int, dict]]:
    """(time, HTTP status, body) of /health every half second for ``seconds``; a refused or timed-out probe is
    status 0."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            response = app.health()
            seen.append((time.monotonic(), response.status_code, response.json()))
        except httpx.HTTPError as exc:
            seen.append((time.monotonic(), 0, {"error": repr(exc)}))
        assert app.proc.poll() is None, f"the appliance stopped:\n{app.output()[-3000:]}"
        time.sleep(0.5)
    return seen


@pytest.mark.long
@pytest.mark.timeout(300)
def test_a_home_disk_filled_to_the_last_byte_degrades_loses_nothing_and_recovers_by_itself(tmp_path, home_disk):
    home = home_disk.path
    jobs = write_jobs_file(tmp_path / "jobs.toml", {"effect": EFFECT})
    env = base_env(home, APPLIANCE_JOBS_FILE=str(jobs), JOBS_ENABLED="effect", SHUTDOWN_TIMEOUT="2")
    app = Appliance(env)
    try:
        states = app.wait_states({n: "RUNNING" for n in ("redis", "postgres", "worker", "sidecar")}, timeout=90)
        url = embedded.postgres_url(home / "run", home / "secrets" / "postgres.pgpass")
        _sql(url, SCHEMA)
        began = datetime.now(UTC)
        wait_until(lambda: len(_sql(url, "SELECT 1 FROM fault_effects")) >= 3, 30, "three committed effects")
        assert app.wait_health()["status"] == "ok"
        committed = set(_sql(url, "SELECT job, slot, outcome, run_id FROM job_slots"))
        effects = set(_sql(url, "SELECT slot, run_id, fence FROM fault_effects"))

        wal = psycopg.connect(url, autocommit=True)  # opened before: a new session may need to write a file
        filled = time.monotonic()
        with home_disk.kept_full():
            assert home_disk.free() == (0, 0)
            with pytest.raises(psycopg.Error):
                wal.execute("SELECT pg_logical_emit_message(false, 'disk-test', repeat('x', %s))", (WAL_BYTES,))
            wal.close()
            _poll_health(app, SETTLE - (time.monotonic() - filled))
            during = _poll_health(app, FULL_FOR)
            status = app.status()
            released_at = datetime.now(UTC)
        home_disk.release()
        released = time.monotonic()

        answers = [(code, body.get("status"), body.get("disk", {}).get("status")) for _, code, body in during]
        assert set(answers) == {(200, "degraded", "full")}, answers
        disks = [body["disk"] for _, _, body in during]
        assert {d["filesystem"] for d in disks} == {"APPLIANCE_HOME"} and max(d["free_bytes"] for d in disks) < 2**20
        affected = {name for d in disks for name in d["affected"]}
        # PostgreSQL stopped (its WAL), Redis refuses writes (MISCONF), so the worker cannot beat: all blamed.
        assert {"redis", "database", "worker"} <= affected, [body["disk"]["affected"] for _, _, body in during]
        assert "FATAL" not in {state for state, _ in status.values()}, status

        ok = wait_until(lambda: (b := app.health().json())["status"] == "ok" and b, 60, "/health ok again")
        healthy = time.monotonic()
        assert ok["disk"]["status"] == "ok" and ok["disk"]["affected"] == []
        wait_until(lambda: _sql(url, f"SELECT 1 FROM fault_effects WHERE slot > '{released_at.isoformat()}'"), 30,
                   "a slot run after space returned")
        resumed = time.monotonic()
        print(f"\nrecovery after the filler's removal: /health ok in {healthy - released:.1f}s, "
              f"the next effect committed in {resumed - released:.1f}s")

        # Nothing committed before the fill is lost or changed.
        assert committed <= set(_sql(url, "SELECT job, slot, outcome, run_id FROM job_slots"))
        assert effects <= set(_sql(url, "SELECT slot, run_id, fence FROM fault_effects"))
        # The slots of the full disk are recorded with why they did not run.
        rows = _sql(url, f"SELECT outcome, reason FROM job_slots WHERE slot > '{began.isoformat()}' "
                         f"AND slot < '{released_at.isoformat()}' AND outcome = 'skipped_unavailable'")
        assert rows and all("unavailable" in reason for _, reason in rows), rows

        # The audit judges slots older than lock TTL + grace (5 s + 2 s): wait until the whole period is.
        time.sleep(8)
        until = datetime.now(UTC) - timedelta(seconds=1)
        audit = subprocess.run([sys.executable, "-m", "appliance", "audit", "--json", "--since",
                                began.isoformat(), "--until", until.isoformat()], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        report = json.loads(audit.stdout)
        assert audit.returncode == 0 and report["ok"], json.dumps(report["violations"], indent=1)

        after = app.status()
        assert after["worker"] == states["worker"] and after["sidecar"] == states["sidecar"], \
            "no process died of the full disk"
        assert not [line for line in app.supervisord_log() if "FATAL" in line or "gave up" in line]
        # supervisord could not write the log files: one line each on its output, not a traceback per line.
        output = app.output()
        assert "supervisord: cannot write" in output and "Traceback" not in output, output[-3000:]
        assert not [p for p in (*_files(home / "secrets"), *_files(home / "run")) if p.name.endswith(".tmp")]
        code, _ = app.terminate()
        assert code == 0, app.output()[-3000:]
        assert app.leftovers() == []
    finally:
        app.close()


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.is_dir() else []


def test_starting_on_a_full_disk_fails_at_once_saying_so(tmp_path):
    """``appliance run`` cannot make its directories: exit 1 (a start step failed) with what to do."""
    home = appliance_home()
    try:
        with small_disk(home, size="8M", inodes=64) as disk:
            disk.fill()
            done = subprocess.run([sys.executable, "-m", "appliance", "run"], env=base_env(disk.path / "data"),
                                  cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
    assert done.returncode == 1, done.stderr
    assert "No space left on device" in done.stderr
    assert "APPLIANCE_HOME's filesystem is full: free space there" in done.stderr
