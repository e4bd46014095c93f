"""Redis as operators run it: TLS with client certificates, and the ACL user of docs/operations.md.

The real worker (running, failing, retrying and dead-lettering jobs, sending alerts), a real gunicorn sidecar
(every route, with admin credentials) and the CLI run as that user over TLS; Redis's own ACL LOG must then be
empty, so a command or key the code starts using and the documented line does not grant fails this test.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.managed.certs import SERVER_IP
from tests.services import wait_until
from tests.sidecar.processes import SidecarProcess, process_env
from tests.sidecar.routes import every_request, sweep
from tests.worker.harness import WorkerProcess, worker_env, write_jobs_file

pytestmark = pytest.mark.process

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
PASSWORD = "acl-user-password-5f1c"
ADMIN_TOKEN = "acl-test-admin-token-0123456789"
JOBS: dict[str, dict[str, object]] = {
    "ok": {"callable": "tests.managed.jobs:ok", "schedule": "1s"},
    "boom": {"callable": "tests.managed.jobs:boom", "schedule": "1s", "max_retries": 1},
}


def documented_acl() -> list[str]:
    """The ``ACL SETUSER`` line of the operations runbook, as command arguments, with our password."""
    lines = [line for line in DOCS.read_text().splitlines() if line.startswith("ACL SETUSER appliance ")]
    assert len(lines) == 1, "docs/operations.md must hold exactly one ACL SETUSER line for the appliance"
    return [f">{PASSWORD}" if arg.startswith(">") else arg for arg in shlex.split(lines[0])]


def granted_commands(acl: list[str]) -> set[str]:
    return {arg[1:].lower() for arg in acl if arg.startswith("+")}


def test_every_command_a_lua_script_calls_is_granted():
    """Commands inside Lua scripts are checked against the ACL too; they appear nowhere else."""
    calls = set()
    for path in (Path(__file__).resolve().parents[2] / "appliance").rglob("*.py"):
        calls |= {c.lower() for c in re.findall(r"redis\.call\(\s*['\"]([A-Za-z]+)['\"]", path.read_text())}
    assert calls, "the appliance's Lua scripts were not found"
    assert calls <= granted_commands(documented_acl()), calls - granted_commands(documented_acl())


def _env(tls_redis, certs, base: dict[str, str]) -> dict[str, str]:
    return {
        **base,
        "REDIS_URL": f"rediss://appliance:{PASSWORD}@{SERVER_IP}:{tls_redis.tls_port}/0",
        "REDIS_TLS_CA_FILE": str(certs.ca),
        "REDIS_TLS_CERT_FILE": str(certs.client_cert),
        "REDIS_TLS_KEY_FILE": str(certs.client_key),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "JOB_RETRY_BACKOFF_MS": "100",
        "ALERT_CRITICAL_THRESHOLD": "1",
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def _exercise(tmp_path, env: dict[str, str], admin: redis.Redis) -> None:
    """Worker, sidecar and CLI doing everything they do, as the ACL user."""
    worker = WorkerProcess(worker_env(env, write_jobs_file(tmp_path / "jobs.toml", JOBS), list(JOBS)),
                           tmp_path / "worker.log")
    sidecar = SidecarProcess(process_env({**env, "APPLIANCE_JOBS_FILE": str(tmp_path / "jobs.toml")}),
                             tmp_path / "sidecar.log")
    try:
        worker.wait_for_log("worker started")
        wait_until(lambda: admin.llen("appliance:history:ok") >= 2 and admin.hlen("appliance:dlq") >= 1, 30,
                   "runs and a dead letter written by the worker")
        sidecar.wait_ready()
        from appliance.kernel.contract.packs import load_settings

        config = load_settings({**env, "APPLIANCE_JOBS_FILE": str(tmp_path / "jobs.toml")}, env_file=None)
        dead_id = admin.hkeys("appliance:dlq")[0]
        requests = every_request(config, {"name": "ok", "dead_id": dead_id, "filename": "dashboard.js"})
        answers = sweep(sidecar.url, requests, [{"Authorization": f"Bearer {ADMIN_TOKEN}"}])
        assert not [a for a in answers if re.match(r"\S+ \S+ 5\d\d ", a)], [a[:300] for a in answers]
        cli_env = {**worker_env(env, tmp_path / "jobs.toml", list(JOBS))}
        for args in (("jobs", "list", "--json"), ("jobs", "history", "--json"), ("locks", "list", "--json"),
                     ("dlq", "list", "--json"), ("jobs", "pause", "ok"), ("jobs", "resume", "ok"),
                     ("jobs", "trigger", "ok"), ("check-config",)):
            result = _cli(cli_env, *args)
            assert result.returncode == 0, (args, result.stderr)
        wait_until(lambda: admin.llen("appliance:triggers:ok") == 0, 15, "the trigger taken by the worker")
    finally:
        sidecar.stop()
        worker.terminate()
    assert "NOPERM" not in worker.log_path.read_text() + sidecar.log_path.read_text()


def test_worker_sidecar_and_cli_work_as_the_documented_acl_user_over_tls(tmp_path, tls_redis, certs, app_env):
    admin = tls_redis.client()
    admin.execute_command(*documented_acl())
    admin.execute_command("ACL", "LOG", "RESET")
    _exercise(tmp_path, _env(tls_redis, certs, app_env), admin)
    denied = admin.execute_command("ACL", "LOG")
    assert not denied, [(d.get("reason"), d.get("object"), d.get("context")) for d in denied]
    assert admin.info("commandstats").get("cmdstat_evalsha"), "the lease scripts must have run as that user"


@pytest.mark.parametrize("command", [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("GET", "session:1"),
    ("SET", "session:1", "x"), ("DEL", "queue:mail"), ("PUBLISH", "other-channel", "x"), ("SHUTDOWN",),
    ("EVAL", "return redis.call('GET', KEYS[1])", "1", "session:1"), ("ACL", "WHOAMI"), ("SCRIPT", "FLUSH"),
])
def test_the_acl_user_is_refused_everything_else(tls_redis, certs, command):
    admin = tls_redis.client()
    admin.execute_command(*documented_acl())
    admin.set("session:1", "someone else's")
    user = redis.Redis(host=SERVER_IP, port=tls_redis.tls_port, username="appliance", password=PASSWORD, ssl=True,
                       ssl_ca_certs=str(certs.ca), ssl_certfile=str(certs.client_cert),
                       ssl_keyfile=str(certs.client_key), decode_responses=True, driver_info=None)
    with user:
        assert user.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.execute_command(*command)
    assert admin.get("session:1") == "someone else's" and admin.ping()
