"""The files the appliance writes itself, on a disk filled to the last byte (a tmpfs of the test's own): none
is left half-written, no process dies of it, and each one recovers by itself when space returns.

The appliance as a whole on a full disk is ``tests/appliance/test_disk_full.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.packs.knowledge.storage_lock import StorageLock
from appliance.supervise import fatal
from appliance.supervise.pgaccess import load_password, write_private
from appliance.worker.liveness import Liveness
from tests.services import wait_until
from tests.tmpfs import small_disk

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.process


def test_a_secret_rewritten_on_a_full_disk_keeps_its_old_value_and_leaves_nothing_behind(tmp_path):
    """Room for a new file but not for its bytes: the write fails, the old file stays, and so does nothing else
    (before, a temporary file was left half-written)."""
    with small_disk(tmp_path / "disk") as disk:
        secrets = disk.path / "secrets"
        password = load_password(secrets / "postgres-password", secrets / "postgres.pgpass")
        disk.fill(inodes=False)
        with pytest.raises(OSError, match="No space left"):
            write_private(secrets / "postgres.pgpass", "*:*:*:appliance:another-password\n")
        assert (secrets / "postgres.pgpass").read_text() == f"*:*:*:appliance:{password}\n"
        assert sorted(p.name for p in secrets.iterdir()) == ["postgres-password", "postgres.pgpass"]
        disk.release()
        write_private(secrets / "postgres.pgpass", "*:*:*:appliance:another-password\n")
        assert (secrets / "postgres.pgpass").read_text() == "*:*:*:appliance:another-password\n"
        assert oct((secrets / "postgres.pgpass").stat().st_mode & 0o777) == "0o600"


def test_the_fatal_listener_on_a_full_disk_waits_for_room_to_record_why_then_stops(tmp_path):
    """A program going FATAL while the disk is full: the listener neither dies nor stops the appliance without
    the marker (which would make it exit 0, "stopped on request"); it records the marker once there is room,
    then stops the appliance."""
    with small_disk(tmp_path / "disk") as disk:
        marker = disk.path / "fatal.json"
        disk.fill()
        stopped = threading.Event()
        payload = "processname:worker groupname:worker from_state:BACKOFF"
        thread = threading.Thread(target=fatal.handle, args=({"eventname": "PROCESS_STATE_FATAL"}, payload,
                                                             {"worker"}, marker, stopped.set))
        thread.start()
        try:
            time.sleep(2.5)
            assert not stopped.is_set() and not marker.exists()
        finally:
            disk.release()
        thread.join(10)
        assert stopped.is_set()
        assert json.loads(marker.read_text())["program"] == "worker"
        assert [p.name for p in disk.path.iterdir() if p.name != "filler"] == ["fatal.json"]


#: A process using the appliance's metrics on a full disk: new label sets (new entries, new pages of the map)
#: and a new metric type (a new file), then, once ``go`` exists, more counts; it prints what it counted.
METRICS = """
import os, sys, time
from pathlib import Path
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from appliance.kernel.runtime import metrics
for i in range(300):
    metrics.JOB_RUNS.labels(f"job-{i}", "skipped_unavailable").inc()
metrics.JOB_DURATION.labels("job-0").observe(0.5)
print("counted on the full disk", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.05)
time.sleep(1.1)  # the next try of moving the values into their files
metrics.JOB_RUNS.labels("job-1", "skipped_unavailable").inc(41)
metrics.JOB_DURATION.labels("job-0").observe(0.5)
print("counted again", flush=True)
"""


@pytest.mark.parametrize("inodes", [False, True], ids=["blocks", "blocks-and-inodes"])
def test_metrics_on_a_full_disk_never_kill_the_process_and_reach_their_files_when_space_returns(tmp_path, inodes):
    """prometheus_client maps sparse files: written on a full disk, a new page is a SIGBUS. Here the process
    lives on, and what it counted meanwhile is in its files once space returns."""
    from prometheus_client.multiprocess import MultiProcessCollector

    with small_disk(tmp_path / "disk") as disk:
        directory = disk.path / "metrics"
        directory.mkdir()
        disk.fill(inodes=inodes)
        go = tmp_path / "go"
        proc = subprocess.Popen([sys.executable, "-c", METRICS, str(directory), str(go)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == "counted on the full disk\n", (proc.wait(30), proc.stderr.read() if proc.stderr else "")
            disk.release()
            go.touch()
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0 and out == "counted again\n", (proc.returncode, err)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for metric in MultiProcessCollector(None, path=str(directory)).collect() for s in metric.samples}
        runs = {labels: value for (name, labels), value in samples.items() if name == "appliance_job_runs_total"}
        assert len(runs) == 300
        assert runs[(("job", "job-1"), ("outcome", "skipped_unavailable"))] == 42
        assert samples[("appliance_job_duration_seconds_count", (("job", "job-0"),))] == 2


def test_a_worker_started_on_a_full_disk_runs_without_its_liveness_file_and_makes_it_later(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        directory = disk.path / "run" / "workers"
        mine = Liveness(directory, "host:1")
        disk.fill()
        assert mine.hold() is False and not mine.held
        assert Liveness(directory, "host:2").is_dead("host:1") is False, "unknown here: left to the lease TTL"
        disk.release()
        assert mine.hold() is True and mine.held
        assert Liveness(directory, "host:2").is_dead("host:1") is False, "alive: its lock is held"


def test_the_knowledge_storage_lock_taken_on_a_full_disk_is_held_and_released(tmp_path):
    """Its holder's description cannot be written: the lock is held all the same (it names "another process"),
    and released; before, the failed write left the lock taken by nobody, so the storage stayed busy."""
    with small_disk(tmp_path / "disk") as disk:
        directory = disk.path / "qdrant-edge"
        directory.mkdir()
        disk.fill(inodes=False)
        first = StorageLock(directory)
        assert first.try_acquire() and first.held
        assert (directory / ".lock").read_bytes() == b"", "no half description"
        first.release()
        second = StorageLock(directory)
        assert second.try_acquire()
        second.release()


def test_a_storage_program_waits_for_room_before_it_starts_then_starts_by_itself(tmp_path):
    """The launcher of the embedded services: on a full disk the program does not start (it would fail at
    once, and supervisord would give up on it); it starts once space returns; stopping it meanwhile is clean."""
    started = tmp_path / "started"
    with small_disk(tmp_path / "disk", size="64M") as disk:
        data = disk.path / "postgres"
        data.mkdir()
        disk.fill()
        argv = [sys.executable, "-m", "appliance.supervise.launch", "--room", str(data), "postgres", "--",
                "sh", "-c", f"echo $$ > {started}"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2.5)
            assert proc.poll() is None and not started.exists()
            disk.release()
            _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert int(started.read_text()) == proc.pid, "the program itself, in the launcher's place"
        assert "postgres waits for room" in err and "starting postgres" in err

        disk.fill()
        waiting = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: waiting.stderr is not None and "waits for room" in waiting.stderr.readline(), 10,
                       "the launcher waiting")
            waiting.send_signal(signal.SIGINT)  # postgres' stopsignal
            assert waiting.wait(5) == 0
        finally:
            if waiting.poll() is None:
                waiting.kill()
            waiting.communicate()


def test_a_worker_started_on_a_full_disk_runs_its_slots_and_makes_its_liveness_file_once_there_is_room(
        tmp_path, cluster):
    """A worker (re)started while its APPLIANCE_HOME is full (Redis and PostgreSQL elsewhere): it starts, runs
    its slots, and makes its liveness file at a heartbeat after space returns. Before, it died at its first
    metric (SIGBUS, or ENOSPC creating the file) at every start, until supervisord gave up on it."""
    with small_disk(tmp_path / "disk") as disk:
        (disk.path / "home" / "metrics").mkdir(parents=True)  # made by `appliance run` before the disk filled
        disk.fill()
        worker = cluster.start(home="disk/home", HEARTBEAT_TTL="1")
        assert any("no liveness file" in line.get("msg", "") for line in worker.log_lines())
        cluster.wait_mark("committed", count=2, timeout=30)
        assert not (disk.path / "home" / "run" / "workers").exists()
        disk.release()
        worker.wait_for_log("the worker's liveness file exists now (the disk has room again)", timeout=15)
        assert [p.name for p in (disk.path / "home" / "run" / "workers").iterdir()] == [
            f"{worker_id(worker)}.lock"]
        assert worker.alive()
        cluster.stop_all()
    cluster.assert_audit_clean()


def worker_id(worker) -> str:
    line = next(line for line in worker.log_lines() if line.get("msg") == "worker started")
    return line["worker"]


#: A process with the embedded Qdrant (Qdrant Edge) open: it writes, waits for the test to fill the disk,
#: writes again, waits for the test to release it, writes again; it prints what happened.
EDGE = """
import sys
from appliance.errors import ApplianceError
from appliance.kernel.contract.packs import load_settings
from appliance.packs.knowledge.embedder import Identity
from appliance.packs.knowledge.store import KnowledgePoint, open_store, point_id
config = load_settings({"APPLIANCE_HOME": sys.argv[1], "EMBEDDING_DIMENSIONS": "8"}, env_file=None)

def points(start, count):
    return [KnowledgePoint(point_id(i, 0), [float(i % 7 + 1)] * 8,
                           {"tenant_id": 1, "document_id": i, "chunk_index": 0, "text": "x" * 2000})
            for i in range(start, start + count)]

with open_store(config) as store:
    store.ensure(Identity("local", "test", 8))
    store.upsert(points(0, 100))
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        store.upsert(points(100, 2000))
        print("written on the full disk", flush=True)
    except ApplianceError as exc:
        print(f"refused: {exc}", flush=True)
    print(f"count {store.count()}", flush=True)
    sys.stdin.readline()
    store.upsert(points(100, 2000))
    print(f"count {store.count()}", flush=True)
"""


def test_the_embedded_qdrant_writes_nothing_on_a_full_disk_and_again_once_there_is_room(tmp_path):
    """Qdrant Edge writes through memory maps: on a full disk its write was a SIGBUS that killed the process
    (the worker, with every run in it). It refuses instead, with why; what it held stays; it writes again once
    space returns."""
    with small_disk(tmp_path / "disk", size="48M", inodes=1024) as disk:
        proc = subprocess.Popen([sys.executable, "-c", EDGE, str(disk.path / "home")], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline() == "ready\n"
            disk.fill()
            proc.stdin.write("\n")
            proc.stdin.flush()
            refused = proc.stdout.readline()
            assert refused.startswith("refused: the embedded Qdrant writes nothing while APPLIANCE_HOME's "
                                      "filesystem is full"), (refused, proc.wait(30))
            assert proc.stdout.readline() == "count 100\n"
            disk.release()
            out, err = proc.communicate("\n", timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0 and out == "count 2100\n", (proc.returncode, err)


#: supervisor's rotated log file as supervisord uses it (through ``appliance.supervise.pid1``'s patch): 17
#: lines of 1000 bytes, near its rotation at 20000; then lines on the full disk (the rotation comes due);
#: then lines once space returns.
LOG_FILE = """
import sys
from supervisor import loggers
from appliance.supervise import logfiles
logfiles.install()
handler = loggers.RotatingFileHandler(sys.argv[1], maxBytes=20000, backupCount=2)

def lines(start, stop):
    for i in range(start, stop):
        handler.emit(loggers.LogRecord(loggers.LevelsByName.INFO, b"line %05d " % i + b"x" * 989 + b"\\n"))

lines(0, 17)
print("ready", flush=True)
sys.stdin.readline()
lines(17, 40)
print("lines written on the full disk", flush=True)
sys.stdin.readline()
lines(40, 43)
handler.close()
"""


def test_supervisord_log_files_on_a_full_disk_cost_one_line_and_are_written_again_by_themselves(tmp_path):
    """A rotation that comes due on a full disk renames the file and cannot create the next one: in supervisor
    the error escaped (supervisord then closed the program's pipe, or failed where it was logging) and the
    file stayed closed for good. Here: one line when writing stops, one when it resumes, no traceback, and
    the lines after the disk has room are in a new file."""
    with small_disk(tmp_path / "disk") as disk:
        log = disk.path / "worker.log"
        proc = subprocess.Popen([sys.executable, "-c", LOG_FILE, str(log)], cwd=REPO, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline() == "ready\n"
            disk.fill()
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "lines written on the full disk\n"
            disk.release()
            _, err = proc.communicate("\n", timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert err.splitlines() == [f"supervisord: cannot write {log} (No space left on device): its lines are lost "
                                    f"until the disk has room again", f"supervisord: writing {log} again"]
        assert log.read_text().splitlines()[-1].startswith("line 00042 ")
        assert log.with_name("worker.log.1").read_text().startswith("line 00000 "), "it rotated on the full disk"
