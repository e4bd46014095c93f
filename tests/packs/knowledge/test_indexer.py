"""The indexer job against real PostgreSQL and the embedded Qdrant Edge storage (no Qdrant server binary
here), with the local embedder: upserts, shrinking edits, deletes, tenant-filtered search,
collection mismatches, resuming after a cut-short run, and fencing."""

from __future__ import annotations

import pytest

from appliance.errors import Cancelled, LockLost
from appliance.packs.knowledge import indexer, services
from appliance.packs.knowledge.embedder import LocalEmbedder
from appliance.packs.knowledge.store import CollectionMismatch, open_store, point_id

LONG = " ".join(f"Paragraph {i}: the warranty covers repairs of part {i} for two years." for i in range(12))


def add(sql, tenant: int, title: str, body: str) -> int:
    return sql("INSERT INTO knowledge_documents (tenant_id, title, body) VALUES (%s, %s, %s) RETURNING id",
               (tenant, title, body))[0][0]


def points_of(config, doc_id: int | None = None) -> list[dict]:
    with open_store(config) as store:
        points = store.points()
    return [p.payload | {"id": p.id} for p in points if doc_id is None or p.payload["document_id"] == doc_id]


def search(config, text: str, tenant: int | None, limit: int = 5):
    embedder = LocalEmbedder(config.knowledge.embedding_dimensions)
    with open_store(config) as store:
        return store.search(embedder.embed([text])[0], tenant, limit)


def test_upsert_is_idempotent_with_deterministic_point_ids(kconfig, make_ctx, sql, tenants):
    config = kconfig()
    a, _ = tenants
    short = add(sql, a, "Refund policy", "Refunds are issued within 14 days of purchase.")
    long = add(sql, a, "Warranty", LONG)
    first = indexer.run(make_ctx(config))
    assert first["created_collection"] and first["documents"] == 2 and first["pending"] == 0
    points = points_of(config)
    long_chunks = [p for p in points if p["document_id"] == long]
    assert len(long_chunks) > 2 and len(points) == len(long_chunks) + 1
    assert {p["id"] for p in long_chunks} == {point_id(long, i) for i in range(len(long_chunks))}
    assert {p["tenant_id"] for p in points} == {a}
    row = sql("SELECT indexed_version = version, indexed_chunks, index_error FROM knowledge_documents WHERE id = %s",
              (short,))[0]
    assert row == (True, 1, None)

    assert indexer.run(make_ctx(config))["documents"] == 0  # nothing changed
    sql("UPDATE knowledge_documents SET indexed_version = NULL")  # force writing everything again
    again = indexer.run(make_ctx(config))
    assert again["documents"] == 2 and not again["created_collection"]
    assert sorted(p["id"] for p in points_of(config)) == sorted(p["id"] for p in points)


def test_edit_that_shrinks_a_document_removes_its_leftover_chunks(kconfig, make_ctx, sql, tenants):
    config = kconfig()
    doc = add(sql, tenants[0], "Warranty", LONG)
    indexer.run(make_ctx(config))
    assert len(points_of(config, doc)) > 2
    sql("UPDATE knowledge_documents SET body = 'Warranty now lasts five years for every part.' WHERE id = %s", (doc,))
    summary = indexer.run(make_ctx(config))
    assert summary["documents"] == 1 and summary["chunks"] == 1
    remaining = points_of(config, doc)
    assert [p["id"] for p in remaining] == [point_id(doc, 0)]
    assert "five years" in remaining[0]["text"]
    assert sql("SELECT indexed_chunks FROM knowledge_documents WHERE id = %s", (doc,))[0][0] == 1


def test_soft_and_hard_deletes_remove_points(kconfig, make_ctx, sql, tenants):
    config = kconfig()
    a, b = tenants
    soft = add(sql, a, "Old pricing", LONG)
    hard = add(sql, a, "Holiday hours", "Closed on public holidays.")
    add(sql, b, "Globex onboarding", "Welcome to Globex.")
    kept = add(sql, a, "Support email", "Write to support for help.")
    indexer.run(make_ctx(config))
    sql("UPDATE knowledge_documents SET deleted_at = now() WHERE id = %s", (soft,))
    sql("DELETE FROM knowledge_documents WHERE id = %s", (hard,))
    sql("DELETE FROM tenants WHERE id = %s", (b,))  # cascades to its documents
    assert sql("SELECT count(*) FROM knowledge_deletions")[0][0] == 2
    summary = indexer.run(make_ctx(config))
    assert summary["removed"] == 3
    assert {p["document_id"] for p in points_of(config)} == {kept}
    assert sql("SELECT count(*) FROM knowledge_deletions")[0][0] == 0
    assert sql("SELECT indexed_chunks FROM knowledge_documents WHERE id = %s", (soft,))[0][0] == 0


def test_tenant_filtered_search_finds_the_right_document(kconfig, make_ctx, sql, tenants):
    config = kconfig()
    a, b = tenants
    add(sql, a, "Shipping", "Orders ship from our Pune warehouse within two business days.")
    refund_a = add(sql, a, "Refunds", "Refunds for annual plans are prorated and paid to the original card.")
    refund_b = add(sql, b, "Refunds", "Refunds for annual plans are never given; credits are issued instead.")
    add(sql, b, "Careers", "We are hiring engineers in Bengaluru.")
    indexer.run(make_ctx(config))
    hits_a = search(config, "how are refunds for annual plans paid", a)
    assert hits_a[0].document_id == refund_a and {h.tenant_id for h in hits_a} == {a}
    hits_b = search(config, "how are refunds for annual plans paid", b)
    assert hits_b[0].document_id == refund_b and {h.tenant_id for h in hits_b} == {b}
    assert len({h.document_id for h in search(config, "refunds", None, limit=10)}) == 4


def test_collection_of_another_size_is_a_clear_error(kconfig, make_ctx, sql, tenants):
    add(sql, tenants[0], "Refunds", "Refunds within 14 days.")
    indexer.run(make_ctx(kconfig()))
    sql("UPDATE knowledge_documents SET body = 'Refunds within 30 days.'")
    wider = kconfig(EMBEDDING_DIMENSIONS="128")
    with pytest.raises(CollectionMismatch) as err:
        indexer.run(make_ctx(wider))
    message = str(err.value)
    assert "size 64" in message and "128 dimensions" in message and "QDRANT_COLLECTION" in message
    assert sql("SELECT indexed_version = version FROM knowledge_documents")[0][0] is False

    fresh = kconfig(EMBEDDING_DIMENSIONS="128", QDRANT_COLLECTION="kb_128")
    summary = indexer.run(make_ctx(fresh))
    assert summary["created_collection"] and summary["documents"] == 1  # a new collection is filled from scratch


def test_collection_filled_by_another_model_is_a_clear_error(kconfig, make_ctx, sql, tenants, openai_server):
    add(sql, tenants[0], "Refunds", "Refunds within 14 days.")
    indexer.run(make_ctx(kconfig()))
    with_openai = kconfig(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=openai_server.base_url,
                          EMBEDDING_MODEL="text-embedding-3-small")
    with pytest.raises(CollectionMismatch, match=r"local-hash-v1.*text-embedding-3-small"):
        indexer.run(make_ctx(with_openai))
    assert openai_server.requests == []


def test_run_cut_short_continues_where_it_stopped(kconfig, make_ctx, sql, tenants):
    config = kconfig()  # KNOWLEDGE_BATCH_SIZE=4
    ids = [add(sql, tenants[0], f"Note {i}", f"Note number {i} about topic {i}.") for i in range(10)]
    batches: list[int] = []
    ctx = make_ctx(config)

    def cut_after_first_batch(done: int) -> None:
        batches.append(done)
        ctx.cancel.cancel("shutdown")

    make_ctx.services[services.PROGRESS] = cut_after_first_batch
    with pytest.raises(Cancelled):
        indexer.run(ctx)
    assert batches == [4] and ctx.processed_count == 4
    assert sql("SELECT count(*) FROM knowledge_documents WHERE indexed_version = version")[0][0] == 4
    del make_ctx.services[services.PROGRESS]
    summary = indexer.run(make_ctx(config))
    assert summary["documents"] == 6 and summary["pending"] == 0
    assert {p["document_id"] for p in points_of(config)} == set(ids)


def test_run_that_lost_its_fence_commits_nothing(kconfig, make_ctx, pool, sql, tenants):
    from appliance.kernel.protocol.fencing import issue_fence

    config = kconfig()
    add(sql, tenants[0], "Refunds", "Refunds within 14 days.")
    ctx = make_ctx(config)
    assert ctx.fence >= 1
    with pool.connection() as conn:
        issue_fence(conn, ctx.job)  # a newer run took the job
    with pytest.raises(LockLost):
        indexer.run(ctx)
    assert sql("SELECT indexed_version FROM knowledge_documents")[0][0] is None


def test_backlog_and_processed_are_reported(kconfig, make_ctx, sql, tenants):
    config = kconfig()
    for i in range(5):
        add(sql, tenants[0], f"Note {i}", "text")
    ctx = make_ctx(config)
    indexer.run(ctx)
    assert ctx.processed_count == 5 and ctx.backlog == {"unindexed_documents": 0}
