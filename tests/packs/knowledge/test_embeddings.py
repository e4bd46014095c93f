"""The OpenAI embedder through the real ``openai`` client against a local OpenAI-compatible HTTP server
(``tests/packs/knowledge/openai_server.py``; OpenAI itself cannot be reached here): batching, token metrics,
``Retry-After`` on 429, refused inputs, and the circuit breaker across the worker's retries. Qdrant is
the embedded Qdrant Edge storage (no Qdrant server binary here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from appliance.kernel.protocol.state import ClusterState
from appliance.packs.knowledge import indexer
from appliance.packs.knowledge.embedder import LocalEmbedder
from appliance.packs.knowledge.store import open_store
from tests.packs.knowledge.openai_server import REFUSE, Reply
from tests.services import wait_until

MODEL = "text-embedding-3-small"
REPO = Path(__file__).resolve().parents[3]


def add(sql, tenant: int, title: str, body: str) -> int:
    return sql("INSERT INTO knowledge_documents (tenant_id, title, body) VALUES (%s, %s, %s) RETURNING id",
               (tenant, title, body))[0][0]


def tokens_counted() -> float:
    return REGISTRY.get_sample_value("appliance_embedding_tokens_total", {"model": MODEL}) or 0.0


@pytest.fixture
def openai_config(kconfig, openai_server):
    def make(**overrides: str):
        return kconfig(OPENAI_API_KEY="sk-local-test", OPENAI_BASE_URL=openai_server.base_url, **overrides)

    return make


def test_chunks_go_in_batched_requests_and_tokens_are_counted(openai_config, openai_server, make_ctx, sql, tenants):
    config = openai_config(EMBEDDING_BATCH_SIZE="3", KNOWLEDGE_BATCH_SIZE="10")
    a, b = tenants
    for i in range(4):
        add(sql, a, f"Note {i}", f"Acme note {i} about invoices and their due dates.")
    refund = add(sql, b, "Refunds", "Refunds for annual plans are paid to the original card within a week.")
    before = tokens_counted()
    summary = indexer.run(make_ctx(config))
    assert summary["documents"] == 5 and summary["chunks"] == 5 and summary["failed"] == 0
    sizes = [len(seen.inputs) for seen in openai_server.requests]
    assert sizes == [3, 2], "5 chunks in requests of at most EMBEDDING_BATCH_SIZE=3 inputs"
    seen = openai_server.requests[0]
    assert seen.model == MODEL and seen.dimensions == 64 and seen.authorization == "Bearer sk-local-test"
    sent_words = sum(len(text.split()) for s in openai_server.requests for text in s.inputs)
    assert tokens_counted() - before == sent_words  # the server reports one token per word
    vector = LocalEmbedder(64).embed(["refunds for annual plans"])[0]  # the server's vectors are the local ones
    with open_store(config) as store:
        hits = store.search(vector, b, 3)
    assert [h.document_id for h in hits] == [refund]


def test_429_is_retried_after_the_servers_retry_after(openai_config, openai_server, make_ctx, sql, tenants):
    config = openai_config()
    add(sql, tenants[0], "Refunds", "Refunds within 14 days.")
    openai_server.replies.append(Reply(429, {"retry-after": "1"},
                                       {"error": {"message": "rate limited", "type": "rate_limit_error"}}))
    summary = indexer.run(make_ctx(config))
    assert summary["documents"] == 1 and summary["failed"] == 0
    first, second = openai_server.requests
    assert first.inputs == second.inputs
    assert 0.95 <= second.at - first.at < 3.0, "the retry waits for Retry-After (1 s), not the 0.5 s default"


def test_refused_document_is_marked_failed_and_the_rest_is_indexed(openai_config, openai_server, make_ctx, sql,
                                                                   tenants):
    config = openai_config()
    good = add(sql, tenants[0], "Shipping", "Orders ship within two days.")
    bad = add(sql, tenants[0], "Spam", f"{REFUSE} this text")
    summary = indexer.run(make_ctx(config))
    assert summary["documents"] == 1 and summary["failed"] == 1
    rows = dict(sql("SELECT id, index_error FROM knowledge_documents WHERE failed_version = version"))
    assert list(rows) == [bad] and "input refused by policy" in rows[bad]
    assert sql("SELECT indexed_version = version FROM knowledge_documents WHERE id = %s", (good,))[0][0] is True
    assert indexer.run(make_ctx(config))["failed"] == 0  # the failed version is not retried until it changes
    sql("UPDATE knowledge_documents SET body = 'fine now' WHERE id = %s", (bad,))
    assert indexer.run(make_ctx(config))["documents"] == 1


@pytest.mark.process
def test_repeated_500s_open_the_breaker_and_the_worker_retries_later(tmp_path, app_env, kenv, redis_server,
                                                                       openai_server, sql, tenants):
    """A worker process runs the indexer; the embeddings server answers 500 until the breaker opens, so the
    third attempt fails without calling it; once the server is back, a later retry indexes the document."""
    doc = add(sql, tenants[0], "Refunds", "Refunds within 14 days.")
    openai_server.failing = Reply(500, {"retry-after-ms": "20"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_", "QDRANT_", "OPENAI_"))}
    env.update(app_env)
    env.update({k: v for k, v in kenv.items() if k != "DATABASE_URL"})
    env.update({"PYTHONPATH": str(REPO), "LOG_FORMAT": "json", "LOG_LEVEL": "info", "STARTUP_WAIT": "5",
                "JOBS_ENABLED": "knowledge-indexer", "SCHEDULE_KNOWLEDGE_INDEXER": "1h",
                "MAX_RETRIES_KNOWLEDGE_INDEXER": "3", "JOB_RETRY_BACKOFF_MS": "200",
                "OPENAI_API_KEY": "sk-local-test", "OPENAI_BASE_URL": openai_server.base_url,
                "EMBEDDING_MAX_RETRIES": "1", "EMBEDDING_BREAKER_THRESHOLD": "2", "EMBEDDING_BREAKER_RESET": "2500ms"})
    state = ClusterState(redis_server.client())
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "appliance", "worker"], env=env, cwd=REPO,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "worker started" in log_path.read_text(), 20, "the worker")
        state.triggers.request("knowledge-indexer", by="test")

        def manual_runs() -> list[dict]:
            return sorted((r.to_json() for r in state.history.runs("knowledge-indexer") if r.trigger != "schedule"),
                          key=lambda r: r["attempt"])

        runs = wait_until(lambda: len(manual_runs()) >= 3 and manual_runs(), 20, "three failed attempts")
        assert [(r["attempt"], r["outcome"]) for r in runs] == [(1, "failure"), (2, "failure"), (3, "failure")]
        assert "EmbeddingUnavailable" in runs[0]["error"] and "500" in runs[0]["error"]
        assert "circuit open" in runs[2]["error"]
        assert len(openai_server.requests) == 4, "two attempts of two requests each; none while the circuit is open"
        openai_server.failing = None
        runs = wait_until(lambda: len(manual_runs()) >= 4 and manual_runs(), 20, "the fourth attempt")
        assert runs[3]["attempt"] == 4 and runs[3]["outcome"] == "success", runs[3]
        assert sql("SELECT indexed_version = version FROM knowledge_documents WHERE id = %s", (doc,))[0][0] is True
    finally:
        worker.terminate()
        worker.wait(15)
    assert not [line for line in log_path.read_text().splitlines() if "sk-local-test" in line]
    assert json.loads(log_path.read_text().splitlines()[-1])["msg"] == "worker stopped"
