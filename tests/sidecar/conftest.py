"""Fixtures of the sidecar tests: a configuration on this test's Redis and database, the Flask app, and
helpers that produce what workers publish (job table, heartbeats, runs) through ``ClusterState`` and the
lease scripts, so the tests do not depend on the worker loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from appliance.config import Config
from appliance.kernel.contract.packs import load_settings
from appliance.kernel.runtime.clock import SYSTEM, Clock, SteppedClock
from appliance.sidecar import create_app
from tests.sidecar.cluster import ADMIN_TOKEN, Cluster


@pytest.fixture(scope="session")
def sidecar_db(postgres_server) -> str:
    """One migrated database for the session: the sidecar checks it and reads the ledger from it (each test's
    ``cluster`` starts with an empty ledger)."""
    import psycopg

    from appliance.kernel.protocol.db.migrate import migrate

    url = postgres_server.create_database("sidecar")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


@pytest.fixture
def sidecar_env(tmp_path, redis_server, sidecar_db) -> dict[str, str]:
    return {
        "APPLIANCE_HOME": str(tmp_path / "home"),
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": sidecar_db,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "info",
        "HEALTH_CACHE_TTL": "0",
    }


@pytest.fixture
def sidecar_config(sidecar_env) -> Callable[..., Config]:
    def make(**overrides: str) -> Config:
        env = {**sidecar_env, **overrides}
        return load_settings({k: v for k, v in env.items() if v is not None}, env_file=None)

    return make


@pytest.fixture
def clock() -> SteppedClock:
    """The test's clock, shared by the app and ``cluster``: it starts at the real time (so what PostgreSQL and
    Redis stamp themselves lines up) and then moves only when the test advances it."""
    return SteppedClock(SYSTEM.now())


@pytest.fixture
def make_app(sidecar_config, clock):
    """``make_app(clock=..., **env_overrides)`` -> a fresh app on the test's clock (or the one given), closed
    at the end of the test."""
    apps = []
    default = clock

    def make(clock: Clock | None = None, **overrides: str):
        apps.append(create_app(sidecar_config(**overrides), clock=clock or default))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["appliance"].close()


@pytest.fixture
def make_client(make_app):
    """``make_client(clock=..., **env_overrides)`` -> a Flask test client of a fresh app."""
    return lambda clock=None, **overrides: make_app(clock, **overrides).test_client()


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def cluster(redis_server, sidecar_db, clock):
    """Runs recorded as workers record them: in Redis and in the ledger."""
    import psycopg
    from psycopg_pool import ConnectionPool

    from appliance.kernel.protocol.ledger import Ledger

    with psycopg.connect(sidecar_db, autocommit=True) as conn:
        conn.execute("TRUNCATE job_runs, job_slots, job_fences")
    client = redis_server.client()
    with ConnectionPool(sidecar_db, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        yield Cluster(client, Ledger(pool), clock)
    client.close()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

