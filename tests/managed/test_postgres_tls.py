"""PostgreSQL over TLS with ``sslmode=verify-full``: a real PostgreSQL with ssl=on and a server certificate
made in the test. The appliance connects encrypted when the CA matches, and stops with exit code 2 and one
line when the certificate is signed by another CA or names another host."""

from __future__ import annotations

import shutil
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.runtime.clients import connect_db
from appliance.supervise import embedded
from tests.conftest import _require
from tests.services import PostgresServer
from tests.sidecar.processes import process_env
from tests.worker.harness import REPO

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def tls_postgres(certs):
    """A cluster serving TLS on loopback; the key is given to the server's user, as PostgreSQL demands."""
    _require("initdb", embedded.find_pg_bin)
    server = PostgresServer()
    tls = server.dir / "tls"
    tls.mkdir()
    for source in (certs.server_cert, certs.server_key):
        shutil.copy(source, tls / source.name)
    (tls / certs.server_key.name).chmod(0o600)
    embedded.give_to(tls, server.user)
    server.extra_args = ("-c", "ssl=on", "-c", f"ssl_cert_file={tls / certs.server_cert.name}",
                         "-c", f"ssl_key_file={tls / certs.server_key.name}")
    server.start()
    yield server
    server.cleanup()


def _tcp_url(server: PostgresServer, host: str = "127.0.0.1") -> str:
    database = urlsplit(server.create_database("tls")).path.lstrip("/")
    return server.tcp_url(database).replace("@127.0.0.1:", f"@{host}:", 1)


def _env(tmp_path, url: str, ca) -> dict[str, str]:
    return {"APPLIANCE_HOME": str(tmp_path / "home"), "REDIS_URL": "redis://127.0.0.1:9/0", "DATABASE_URL": url,
            "DATABASE_TLS_CA_FILE": str(ca)}


def test_verify_full_connects_encrypted(tmp_path, tls_postgres, certs):
    env = _env(tmp_path, _tcp_url(tls_postgres), certs.ca)
    config = load_settings(env, env_file=None)
    with connect_db(config) as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row[0] is True and row[1].startswith("TLS"), row
        assert conn.pgconn.ssl_in_use and conn.info.get_parameters().get("sslmode") == "verify-full"
    result = subprocess.run([sys.executable, "-m", "appliance", "migrate"], env=process_env(env), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("host, ca", [("127.0.0.1", "other_ca"), ("localhost", "ca")],
                         ids=["another CA", "host name mismatch"])
def test_a_refused_certificate_stops_migrate_with_one_line(tmp_path, tls_postgres, certs, host, ca):
    env = _env(tmp_path, _tcp_url(tls_postgres, host), getattr(certs, ca))
    result = subprocess.run([sys.executable, "-m", "appliance", "migrate"], env=process_env(env), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appliance: PostgreSQL server certificate refused"), output
    assert "Traceback" not in output


def test_without_a_ca_verify_full_is_a_configuration_error(tmp_path, tls_postgres):
    url = urlunsplit(urlsplit(_tcp_url(tls_postgres))._replace(query="sslmode=verify-full"))
    env = {"APPLIANCE_HOME": str(tmp_path / "home"), "DATABASE_URL": url}
    result = subprocess.run([sys.executable, "-m", "appliance", "check-config"], env=process_env(env), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "DATABASE_TLS_CA_FILE" in result.stderr, result.stderr
