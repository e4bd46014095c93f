"""Fixtures: real redis-server and PostgreSQL processes in temp dirs, and a clean configuration.

A missing server program fails the run under CI (``CI=true``) and skips elsewhere with the reason.
"""

from __future__ import annotations

import os
import shutil

import pytest

from appliance.config import Config
from appliance.kernel.contract.packs import load_settings
from appliance.supervise import embedded
from tests.services import PostgresServer, RedisServer


def _require(program: str, finder=shutil.which) -> None:
    try:
        found = finder(program)
    except FileNotFoundError:
        found = None
    if not found:
        message = f"{program} is not installed (./scripts/test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def redis_server():
    """A fresh redis-server per test (starts in a few ms)."""
    _require("redis-server")
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL cluster for the session; tests get their own database from ``database_url``."""
    _require("initdb", embedded.find_pg_bin)
    server = PostgresServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def database_url(postgres_server):
    """The URL of a new, empty database for this test."""
    return postgres_server.create_database()


@pytest.fixture
def migrated_db(database_url):
    """A database with every migration applied."""
    import psycopg

    from appliance.kernel.protocol.db.migrate import migrate

    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
    return database_url


@pytest.fixture
def app_env(tmp_path, redis_server, migrated_db) -> dict[str, str]:
    """Environment for the appliance pointing at this test's Redis and database."""
    return {
        "APPLIANCE_HOME": str(tmp_path / "home"),
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": migrated_db,
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "debug",
    }


@pytest.fixture
def make_config(app_env):
    """Build a ``Config`` from ``app_env`` plus overrides."""

    def make(**overrides: str) -> Config:
        return load_settings({**app_env, **overrides}, env_file=None)

    return make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that take tens of seconds by design (``@pytest.mark.long``) go first: in a parallel run they then
    overlap the many short ones instead of being the last to finish. Otherwise the order is unchanged."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
