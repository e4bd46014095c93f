"""rediss:// fails closed: a server whose certificate does not verify (another CA, the system's CAs only, or a
host name the certificate does not name) stops the worker and the CLI at once with exit code 2 and one line,
without a traceback or the password. Real redis-server with TLS; certificates made in the test."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.managed.certs import SERVER_IP
from tests.sidecar.processes import process_env
from tests.worker.harness import REPO

pytestmark = pytest.mark.process

PASSWORD = "tls-test-password-c0ffee"


def _run(env: dict[str, str], *args: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=timeout)
    return result, time.monotonic() - started


def _refused(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and PASSWORD not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appliance: Redis server certificate refused"), output
    return lines[0]


@pytest.mark.parametrize("host, ca", [(SERVER_IP, "other_ca"), (SERVER_IP, None), ("localhost", "ca")],
                         ids=["another CA", "system CAs only", "host name mismatch"])
def test_a_certificate_that_does_not_verify_stops_cli_and_worker(tmp_path, tls_redis, certs, app_env, host, ca):
    tls_redis.client().config_set("requirepass", PASSWORD)
    env = process_env({
        **app_env, "REDIS_URL": f"rediss://:{PASSWORD}@{host}:{tls_redis.tls_port}/0",
        "REDIS_TLS_CERT_FILE": str(certs.client_cert), "REDIS_TLS_KEY_FILE": str(certs.client_key),
        **({"REDIS_TLS_CA_FILE": str(getattr(certs, ca))} if ca else {}),
        "STARTUP_WAIT": "30", "JOBS_ENABLED": "trial-expiration",
    })
    line = _refused(_run(env, "jobs", "list", "--json")[0])
    assert ("Hostname mismatch" in line) == (host == "localhost"), line
    result, seconds = _run(env, "worker")
    _refused(result)
    assert seconds < 10, "a refused certificate must not be waited on for STARTUP_WAIT"


def test_verified_tls_with_a_client_certificate_serves_the_cli(tls_redis, certs, app_env):
    tls_redis.client().set("lock:trial-expiration", "host-a pid=1 started=2026-01-01T00:00:00Z run=r1", px=60000)
    env = process_env({
        **app_env, "REDIS_URL": f"rediss://{SERVER_IP}:{tls_redis.tls_port}/0", "REDIS_TLS_CA_FILE": str(certs.ca),
        "REDIS_TLS_CERT_FILE": str(certs.client_cert), "REDIS_TLS_KEY_FILE": str(certs.client_key),
    })
    result, _ = _run(env, "locks", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert '"host": "host-a"' in result.stdout, result.stdout


def test_under_appliance_run_the_refused_worker_goes_fatal(tls_redis, certs, migrated_db):
    """The worker exits 2 at every start; supervisord gives up on it and the appliance exits 3."""
    from tests.appliance.harness import Appliance, appliance_home, base_env

    tls_redis.client().config_set("requirepass", PASSWORD)
    home = appliance_home()
    app = Appliance(base_env(home, REDIS_URL=f"rediss://:{PASSWORD}@{SERVER_IP}:{tls_redis.tls_port}/0",
                             REDIS_TLS_CA_FILE=str(certs.other_ca), DATABASE_URL=migrated_db,
                             JOBS_ENABLED="trial-expiration", PATH="/usr/bin:/bin"))
    try:
        assert app.proc.wait(90) == 3, app.output()[-3000:]
        worker_log = (home / "log" / "worker-error.log").read_text()
        assert "Redis server certificate refused" in worker_log and "Traceback" not in worker_log, worker_log
        assert PASSWORD not in worker_log + app.output()
    finally:
        app.close()
