"""Fixtures of the knowledge tests: a configuration on this test's PostgreSQL database, the embedded Qdrant
Edge storage under a temp ``APPLIANCE_HOME``, run contexts built by hand (no worker loop), and a
local OpenAI-compatible embeddings server."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from appliance.config import Config
from appliance.kernel.contract.context import RunContext
from appliance.kernel.contract.packs import load_settings
from tests.packs.knowledge.openai_server import EmbeddingsServer
from tests.runs import run_context

JOB = "knowledge-indexer"


@pytest.fixture
def kenv(tmp_path, migrated_db) -> dict[str, str]:
    """Embedded Qdrant, local embedder, small chunks and dimensions so tests stay fast."""
    return {
        "APPLIANCE_HOME": str(tmp_path / "home"),
        "DATABASE_URL": migrated_db,
        "EMBEDDING_DIMENSIONS": "64",
        "KNOWLEDGE_CHUNK_SIZE": "200",
        "KNOWLEDGE_CHUNK_OVERLAP": "40",
        "KNOWLEDGE_BATCH_SIZE": "4",
        "QDRANT_LOCAL_WAIT": "0.3",
    }


@pytest.fixture
def kconfig(kenv):
    def make(**overrides: str) -> Config:
        return load_settings({**kenv, **overrides}, env_file=None)

    return make


@pytest.fixture
def pool(migrated_db):
    with ConnectionPool(migrated_db, min_size=1, max_size=3, kwargs={"autocommit": False}) as p:
        yield p


@pytest.fixture
def sql(migrated_db):
    """Run one statement in autocommit mode and return its rows (None when it returns none)."""
    conn = psycopg.connect(migrated_db, autocommit=True)

    def run(statement: str, params: tuple = ()):
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None

    yield run
    conn.close()


@pytest.fixture
def tenants(sql) -> tuple[int, int]:
    rows = sql("INSERT INTO tenants (name) VALUES ('acme'), ('globex') RETURNING id")
    return rows[0][0], rows[1][0]


@pytest.fixture
def make_ctx(pool):
    """A ``RunContext`` as the worker builds it; ``services`` persists across the runs of one test."""
    services: dict = {}

    def make(config: Config) -> RunContext:
        return run_context(pool, JOB, config, services=services)

    make.services = services
    return make


@pytest.fixture
def openai_server():
    server = EmbeddingsServer().start()
    yield server
    server.stop()
