"""Fixtures of the job pack tests: a connection pool on the test's migrated database, run contexts the way
the worker builds them (fences issued by PostgreSQL), a real SMTP server and a local provider server."""

from __future__ import annotations

import pytest
from psycopg_pool import ConnectionPool

from appliance.kernel.contract.context import RunContext
from tests.conftest import _require
from tests.packs.crm.providers import ProviderServer
from tests.packs.crm.smtp import SmtpServer, make_certificate
from tests.runs import run_context


@pytest.fixture
def pool(migrated_db):
    pool = ConnectionPool(migrated_db, min_size=1, max_size=6, open=True, kwargs={"autocommit": False})
    yield pool
    pool.close()


@pytest.fixture
def sql(migrated_db):
    """Run one statement in its own connection and return its rows (or nothing)."""
    import psycopg

    def run(query: str, params=None):
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else None

    return run


@pytest.fixture
def make_ctx(make_config, pool):
    """``make_ctx(job, **env)``: a RunContext for one run of ``job`` with these environment overrides."""

    def make(job: str, **env: str) -> RunContext:
        return run_context(pool, job, make_config(**env))

    return make


@pytest.fixture
def provider():
    server = ProviderServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    _require("openssl")
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_server(certificate):
    server = SmtpServer(*certificate).start()
    yield server
    server.stop()
