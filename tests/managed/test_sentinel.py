"""Redis Sentinel: a worker and the CLI reach Redis through ``redis+sentinel://`` and keep working after the
master is killed and the sentinel promotes the replica. Real redis-server master and replica (password
protected) and a real sentinel (``redis-server --sentinel``), each in its own temp dir."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import redis

from tests.conftest import _require
from tests.services import RedisServer, free_port, short_tmpdir, wait_until
from tests.worker.harness import REPO, WorkerProcess, worker_env, write_jobs_file

pytestmark = pytest.mark.process

PASSWORD = "sentinel-test-pw-7e21"
MASTER = "appliance-master"
JOBS = {"ok": {"callable": "tests.managed.jobs:ok", "schedule": "1s"}}
HISTORY = "appliance:history:ok"


class SentinelProcess:
    """One sentinel watching ``master`` with quorum 1 and a one-second down-after, so failover is quick."""

    def __init__(self, master: RedisServer):
        self.dir = short_tmpdir("snt-")
        self.port = free_port()
        conf = self.dir / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}",
            f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1",
            f"sentinel auth-pass {MASTER} {PASSWORD}",
            f"sentinel down-after-milliseconds {MASTER} 1000",
            f"sentinel failover-timeout {MASTER} 10000",
        ]) + "\n")
        self.proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def master_port(self) -> int:
        return int(self.client.sentinel_get_master_addr_by_name(MASTER)[1])

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinel_pair():
    """(master, replica, sentinel), the replica in sync and known to the sentinel."""
    _require("redis-server")
    auth = ("--requirepass", PASSWORD, "--masterauth", PASSWORD)
    master = RedisServer(extra_args=auth)
    master.client = lambda: redis.Redis(port=master.port, password=PASSWORD, decode_responses=True, socket_timeout=2)
    master.start()
    replica = RedisServer(extra_args=(*auth, "--replicaof", "127.0.0.1", str(master.port)))
    replica.client = lambda: redis.Redis(port=replica.port, password=PASSWORD, decode_responses=True,
                                         socket_timeout=2)
    replica.start()
    sentinel = SentinelProcess(master)
    try:
        wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", 15, "replication")
        wait_until(lambda: sentinel.client.sentinel_slaves(MASTER), 15, "the sentinel seeing the replica")
        yield master, replica, sentinel
    finally:
        sentinel.stop()
        replica.cleanup()
        master.cleanup()


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_worker_and_cli_follow_a_failover(tmp_path, sentinel_pair, app_env):
    master, replica, sentinel = sentinel_pair
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/{MASTER}/0"
    env = worker_env({**app_env, "REDIS_URL": url}, write_jobs_file(tmp_path / "jobs.toml", JOBS), list(JOBS))
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_for_log("worker started")
        wait_until(lambda: master.client().llen(HISTORY) >= 2, 20, "runs recorded on the first master")
        assert '"name": "ok"' in _cli(env, "jobs", "list", "--json")

        master.kill()
        wait_until(lambda: sentinel.master_port() == replica.port, 30, "the sentinel promoting the replica")
        promoted = replica.client()
        wait_until(lambda: promoted.info("replication")["role"] == "master", 15, "the replica acting as master")
        before = promoted.llen(HISTORY)
        wait_until(lambda: promoted.llen(HISTORY) >= before + 3, 30, "runs recorded on the new master")
        assert worker.alive()
        assert '"name": "ok"' in _cli(env, "jobs", "list", "--json")
    finally:
        worker.terminate()
    assert PASSWORD not in worker.log_path.read_text()
