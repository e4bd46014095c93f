"""Fixtures of the managed-service tests: certificates, a redis-server serving TLS (with client
certificates) beside its plain admin port, and a PostgreSQL with ssl=on."""

from __future__ import annotations

import pytest

from tests.conftest import _require
from tests.managed.certs import make_certificates
from tests.services import RedisServer, free_port


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_redis(certs):
    """``redis-server`` with TLS on ``tls_port`` (client certificates required there) and its plain port kept
    for the test's own administration."""
    _require("redis-server")
    tls_port = free_port()
    server = RedisServer(extra_args=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs.server_cert), "--tls-key-file",
        str(certs.server_key), "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes",
    ))
    server.tls_port = tls_port
    server.start()
    yield server
    server.cleanup()
