"""``appliance knowledge search`` and ``reindex`` as subprocesses, against this test's PostgreSQL and Redis and
the embedded Qdrant Edge storage (no Qdrant server binary here), with the local embedder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.packs.knowledge import indexer
from appliance.packs.knowledge.store import open_store

pytestmark = pytest.mark.process
REPO = Path(__file__).resolve().parents[3]


def add(sql, tenant: int, title: str, body: str) -> int:
    return sql("INSERT INTO knowledge_documents (tenant_id, title, body) VALUES (%s, %s, %s) RETURNING id",
               (tenant, title, body))[0][0]


@pytest.fixture
def cli(app_env, kenv):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_", "QDRANT_", "OPENAI_"))}
    env.update(app_env)
    env.update({k: v for k, v in kenv.items() if k != "DATABASE_URL"})
    env.update({"PYTHONPATH": str(REPO), "LOG_FORMAT": "json"})

    def run(*args: str, **overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance", "knowledge", *args], env={**env, **overrides},
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    return run


@pytest.fixture
def indexed(kconfig, make_ctx, sql, tenants):
    a, b = tenants
    docs = {
        "shipping_a": add(sql, a, "Shipping", "Orders ship from our Pune warehouse within two business days."),
        "refund_a": add(sql, a, "Refunds", "Refunds for annual plans are prorated and paid to the original card."),
        "refund_b": add(sql, b, "Refunds", "Refunds for annual plans are never given; credits are issued instead."),
    }
    indexer.run(make_ctx(kconfig()))
    return docs


def test_search_by_tenant_name_as_json_and_as_text(cli, indexed, tenants):
    result = cli("search", "refunds for annual plans", "--tenant", "globex", "--limit", "5", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["tenant_id"] == tenants[1] and found["qdrant"] == "embedded"
    assert "local-hash-v1" in found["embedder"]
    assert [h["document_id"] for h in found["hits"]] == [indexed["refund_b"]]
    assert "credits are issued" in found["hits"][0]["text"]

    text = cli("search", "refunds for annual plans", "--tenant", str(tenants[0]), "--limit", "1")
    assert text.returncode == 0, text.stderr
    first = text.stdout.splitlines()[0]
    assert first.startswith("1. [") and f"document {indexed['refund_a']} " in first and "Refunds" in first
    assert f"document {indexed['shipping_a']} " not in text.stdout  # --limit 1


def test_search_errors_are_one_clear_line(cli, indexed):
    unknown = cli("search", "refunds", "--tenant", "initech")
    assert unknown.returncode == 2 and unknown.stderr.strip() == "appliance: no tenant with id or name 'initech'"
    bad_limit = cli("search", "refunds", "--limit", "0")
    assert bad_limit.returncode == 2 and "must be 1 or more" in bad_limit.stderr
    wider = cli("search", "refunds", EMBEDDING_DIMENSIONS="128")  # another vector size than the collection's
    assert wider.returncode == 1 and "Traceback" not in wider.stderr
    assert "size 64" in wider.stderr and "QDRANT_COLLECTION" in wider.stderr


def test_reindex_one_tenant_with_plain_progress(cli, indexed, kconfig, sql, tenants):
    before = dict(sql("SELECT id, indexed_at FROM knowledge_documents"))
    result = cli("reindex", "--tenant", "acme")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reindex: 2 documents marked; success"
    progress = [line for line in result.stderr.splitlines() if line.startswith("reindex:")]
    assert progress == ["reindex: 2/2 documents"] and "\r" not in result.stderr  # not a terminal: plain lines
    after = dict(sql("SELECT id, indexed_at FROM knowledge_documents"))
    assert after[indexed["refund_b"]] == before[indexed["refund_b"]]  # the other tenant is untouched
    assert after[indexed["refund_a"]] > before[indexed["refund_a"]]
    assert after[indexed["shipping_a"]] > before[indexed["shipping_a"]]

    everything = cli("reindex", "--json")
    assert everything.returncode == 0, everything.stderr
    assert json.loads(everything.stdout) == {"marked": 3, "tenant_id": None, "outcome": "success", "error": None}
    assert "reindex:" not in everything.stderr
    with open_store(kconfig()) as store:
        assert store.count(tenants[0]) == 2 and store.count(tenants[1]) == 1


def test_status_says_which_embedder_and_qdrant_and_counts_documents(cli, indexed, sql):
    sql("INSERT INTO knowledge_documents (tenant_id, title, body) SELECT tenant_id, 'New', 'pending' "
        "FROM knowledge_documents LIMIT 1")
    result = cli("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["embedder"], status["model"], status["offline"], status["qdrant"]) == \
        ("local", "local-hash-v1", True, "embedded")
    assert "no OPENAI_API_KEY" in status["note"]
    assert status["documents"] == {"total": 4, "indexed": 3, "failed": 0, "pending": 1, "deletions_pending": 0}
    assert status["qdrant_engine"] == "qdrant-edge" and status["storage"]["points"] == 3
    remote = json.loads(cli("status", "--json", OPENAI_API_KEY="sk-x", QDRANT_URL="http://127.0.0.1:1").stdout)
    assert (remote["embedder"], remote["model"], remote["offline"], remote["qdrant"]) == \
        ("openai", "text-embedding-3-small", False, "server")
    assert "note" not in remote and "sk-x" not in json.dumps(remote)


def test_reindex_while_the_worker_holds_the_lock_marks_and_exits_3(cli, indexed, redis_server, sql):
    redis_server.client().set("lock:knowledge-indexer", "worker-1 pid=1 started=x run=y", px=60_000)
    result = cli("reindex", "--tenant", "acme")
    assert result.returncode == 3 and result.stdout == ""
    assert "lock:knowledge-indexer is held" in result.stderr and "2 documents are marked" in result.stderr
    pending = sql("SELECT count(*) FROM knowledge_documents WHERE indexed_version IS NULL")[0][0]
    assert pending == 2  # marked, left for the lock holder's run
