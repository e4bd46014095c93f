"""The runbook's ``redis-cli GET/DEL lock:NAME`` and ``supervisorctl status`` from any directory, through the
wrappers of ``scripts/wrappers/`` installed next to the ``appliance`` command (as ``scripts/install`` and the
image do), against real redis-server processes and a real ``appliance run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.commands.tools import connection_args, real_redis_cli
from appliance.kernel.runtime.clients import make_redis
from appliance.supervise import embedded
from tests.appliance.harness import REPO, Appliance, appliance_home, base_env
from tests.services import RedisServer, wait_until


@pytest.fixture
def tools(tmp_path) -> Path:
    """A bin directory like .venv/bin: ``appliance`` and the two wrappers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "appliance").symlink_to(Path(sys.executable).with_name("appliance"))
    for name in ("redis-cli", "supervisorctl"):
        (bin_dir / name).write_bytes((REPO / "scripts" / "wrappers" / name).read_bytes())
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run(tools: Path, *argv: str, env: dict[str, str], cwd: str = "/") -> subprocess.CompletedProcess:
    """``argv`` with the wrappers first on PATH (the real redis-cli comes after them), from ``cwd``."""
    full = {"PATH": f"{tools}:/usr/bin:/bin", "PYTHONPATH": str(REPO), **env}
    return subprocess.run(list(argv), env=full, cwd=cwd, capture_output=True, text=True, timeout=30)


def test_a_password_never_reaches_the_command_line():
    url = "redis://appliance:s3cret-pw@10.1.2.3:6380/2"
    args, env = connection_args(make_redis(url))
    assert args == ["-h", "10.1.2.3", "-p", "6380", "-n", "2", "--user", "appliance"]
    assert env == {"REDISCLI_AUTH": "s3cret-pw"}
    tls, _ = connection_args(make_redis("rediss://10.1.2.3:6380/0?ssl_ca_certs=/etc/ca.pem"))
    assert tls == ["-h", "10.1.2.3", "-p", "6380", "--tls", "--cacert", "/etc/ca.pem"]
    assert connection_args(make_redis("unix:///tmp/x/redis.sock?db=3"))[0] == ["-s", "/tmp/x/redis.sock", "-n", "3"]


def test_the_real_redis_cli_is_found_past_the_wrapper(tools):
    found = real_redis_cli(f"{tools}:/usr/bin:/bin")
    assert found is not None and Path(found).parent != tools
    assert real_redis_cli(str(tools)) is None


def test_redis_cli_reaches_a_password_protected_redis_url(tools, tmp_path):
    server = RedisServer(extra_args=("--requirepass", "s3cret-pw"))
    argv = embedded.redis_argv(server.dir, server.dir, port=server.port) + list(server.extra_args)
    server.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
    try:
        wait_until(lambda: make_redis(url).ping(), 10, "redis-server with a password")
        env = {"APPLIANCE_HOME": str(tmp_path / "home"), "REDIS_URL": url}
        assert run(tools, "redis-cli", "SET", "lock:x", "worker-1", env=env).stdout.strip() == "OK"
        got = run(tools, "redis-cli", "GET", "lock:x", env=env)
        assert got.stdout.strip() == "worker-1" and got.stderr == ""  # no "password on the command line" warning
    finally:
        server.cleanup()


@pytest.mark.process
def test_runbook_commands_reach_the_embedded_redis_from_any_directory(tools):
    """Embedded Redis (a unix socket only): `redis-cli GET/DEL lock:NAME` and `supervisorctl status` with no
    flags, from /, with APPLIANCE_HOME exported as the README says; `appliance run` printed how."""
    home = appliance_home()
    app = Appliance(base_env(home, PATH="/usr/bin:/bin", JOBS_ENABLED="call-cleanup"))
    try:
        app.wait_states({"redis": "RUNNING", "worker": "RUNNING"})
        env = {"APPLIANCE_HOME": str(home)}
        status = run(tools, "supervisorctl", "status", env=env)
        # Exit code 3 is supervisorctl's "some program is not running": qdrant stays stopped without a binary.
        assert status.returncode == 3 and status.stderr == "", status.stdout + status.stderr
        assert {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()}["worker"] == "RUNNING"

        assert run(tools, "redis-cli", "SET", "lock:campaign-scheduler", "host pid=1", env=env).stdout.strip() == "OK"
        assert run(tools, "redis-cli", "GET", "lock:campaign-scheduler", env=env).stdout.strip() == "host pid=1"
        assert run(tools, "redis-cli", "DEL", "lock:campaign-scheduler", env=env).stdout.strip() == "1"
        with make_redis(f"unix://{home}/run/redis.sock") as client:
            assert client.exists("lock:campaign-scheduler") == 0
        assert "this appliance's Redis from a shell: " in app.output() and "redis-cli GET lock:NAME" in app.output()
        code, _ = app.terminate()
        assert code == 0
    finally:
        app.close()


def test_an_explicit_server_is_left_to_redis_cli(tools, redis_server, tmp_path):
    redis_server.client().set("plain", "yes")
    env = {"APPLIANCE_HOME": str(tmp_path / "home"), "REDIS_URL": "redis://127.0.0.1:1/0"}
    got = run(tools, "redis-cli", "-p", str(redis_server.port), "GET", "plain", env=env)
    assert got.stdout.strip() == "yes", got.stderr
