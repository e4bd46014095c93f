"""The ``knowledge-indexer`` job: changed documents are chunked, embedded and upserted into Qdrant.

One batch of ``KNOWLEDGE_BATCH_SIZE`` documents at a time, each batch committed before the next (the
checkpoint), so a run cut short continues where it stopped. For each document of a batch:

1. chunk it and embed the chunks (a document the provider refuses is marked failed with the reason; the
   rest go on; a provider outage fails the run, which the worker retries);
2. raise its ``indexed_chunks`` high-water mark, so points about to be written are always accounted for;
3. upsert its points (ids: uuid5 of document and chunk, so writing again overwrites) and delete those left
   over from a longer previous version (or all of them, for a soft-deleted document);
4. record the indexed version, fenced, so a run that lost its lease cannot commit.

Rows removed with ``DELETE`` leave a tombstone (``knowledge_deletions``) whose points are removed first.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import psycopg

from appliance.packs.knowledge import documents, services
from appliance.packs.knowledge.chunking import Chunk, chunk_document
from appliance.packs.knowledge.documents import Document
from appliance.packs.knowledge.embedder import Embedder, EmbeddingRejected
from appliance.packs.knowledge.store import KnowledgePoint, KnowledgeStore, point_id, server_mode
from appliance.sdk import RunContext, check_fence, complete_slot
from appliance.sdk import log_fields as fields

BACKLOG = "unindexed_documents"


@dataclass
class Summary:
    """What a run did; returned as the run's summary."""

    documents: int = 0
    chunks: int = 0
    removed: int = 0
    failed: int = 0
    created_collection: bool = False
    seconds_chunking: float = 0.0
    seconds_embedding: float = 0.0
    seconds_upserting: float = 0.0  # Qdrant: upserts and deletes of points
    seconds_database: float = 0.0  # PostgreSQL: high-water marks and index state
    pending: int = 0

    def as_dict(self) -> dict:
        return {key: round(value, 4) if key.startswith("seconds_") else value for key, value in asdict(self).items()}


def run(ctx: RunContext) -> dict:
    """The job. In embedded mode an idle run (nothing pending, collection already checked by this process)
    does not open Qdrant's local storage at all."""
    if ctx.db is None:
        raise RuntimeError("the knowledge indexer needs PostgreSQL (DATABASE_URL)")
    embedder = services.embedder(ctx.services, ctx.config, ctx.redis)
    checked = (ctx.config.knowledge.collection, embedder.identity)
    with ctx.db.connection() as conn:
        idle = documents.count_pending(conn) == 0 and documents.count_deletions(conn) == 0
        if idle and ctx.services.get(services.CHECKED) == checked and not server_mode(ctx.config):
            ctx.set_backlog(BACKLOG, 0)
            return Summary().as_dict()
        with services.store(ctx.services, ctx.config) as store:
            summary = index(ctx, conn, store, embedder)
    ctx.services[services.CHECKED] = checked
    return summary.as_dict()


def index(ctx: RunContext, conn: psycopg.Connection, store: KnowledgeStore, embedder: Embedder) -> Summary:
    """Bring ``store`` up to date with the table; raises ``CollectionMismatch`` before writing anything
    when the collection was filled by another embedder."""
    summary = Summary()
    if store.ensure(embedder.identity):
        summary.created_collection = True
        reset = documents.reset(conn)
        ctx.log.info("created Qdrant collection %s; every document will be indexed", store.collection,
                     extra=fields(collection=store.collection, embedder=embedder.identity.describe(), documents=reset))
    summary.removed += purge_deletions(ctx, conn, store)
    report = services.progress(ctx.services)
    after = 0
    while True:
        ctx.checkpoint()
        batch = documents.pending_batch(conn, after, ctx.config.knowledge.batch_size)
        if not batch:
            break
        after = batch[-1].id
        index_batch(ctx, conn, store, embedder, batch, summary)
        ctx.processed(len(batch))
        report(len(batch))
    summary.pending = documents.count_pending(conn)
    ctx.set_backlog(BACKLOG, summary.pending)
    with conn.transaction():
        complete_slot(conn, ctx)  # fenced: a takeover after a crash finds this slot done
    return summary


def purge_deletions(ctx: RunContext, conn: psycopg.Connection, store: KnowledgeStore) -> int:
    """Remove the points of rows deleted from the table; returns how many documents."""
    removed = 0
    while True:
        ctx.checkpoint()
        rows = documents.deletions(conn, ctx.config.knowledge.batch_size)
        if not rows:
            return removed
        store.delete([point_id(doc_id, i) for doc_id, chunks in rows for i in range(chunks)])
        with conn.transaction():
            check_fence(conn, ctx.job, ctx.fence)
            documents.forget_deletions(conn, [doc_id for doc_id, _ in rows])
        removed += len(rows)


def index_batch(ctx: RunContext, conn: psycopg.Connection, store: KnowledgeStore, embedder: Embedder,
                batch: list[Document], summary: Summary) -> None:
    knowledge = ctx.config.knowledge
    t0 = time.perf_counter()
    chunks = {doc.id: chunk_document(doc.title, doc.body, knowledge.chunk_size, knowledge.chunk_overlap)
              for doc in batch if doc.deleted_at is None}
    t1 = time.perf_counter()
    vectors, failed = embed(embedder, [doc for doc in batch if doc.id in chunks], chunks)
    t2 = time.perf_counter()
    counts = {doc.id: len(chunks.get(doc.id, ())) for doc in batch if doc.id not in failed}
    may_exist = documents.raise_high_water(conn, counts)
    t3 = time.perf_counter()
    points = [_point(doc, chunk, vectors[doc.id][chunk.index], len(chunks[doc.id]))
              for doc in batch if doc.id in may_exist and doc.id in vectors for chunk in chunks[doc.id]]
    store.upsert(points)
    store.delete([point_id(doc_id, i) for doc_id, n in may_exist.items() for i in range(counts[doc_id], n)])
    t4 = time.perf_counter()
    by_id = {doc.id: doc for doc in batch}
    with conn.transaction():
        check_fence(conn, ctx.job, ctx.fence)
        documents.mark_indexed(conn, [(doc_id, by_id[doc_id].version, counts[doc_id]) for doc_id in may_exist])
        documents.mark_failed(conn, [(doc_id, by_id[doc_id].version, reason) for doc_id, reason in failed.items()])
    t5 = time.perf_counter()
    for doc_id, reason in failed.items():
        ctx.log.warning("document not indexed: %s", reason, extra=fields(document_id=doc_id))
    summary.documents += len(may_exist)
    summary.chunks += len(points)
    summary.removed += sum(1 for doc in batch if doc.deleted_at is not None and doc.id in may_exist)
    summary.failed += len(failed)
    summary.seconds_chunking += t1 - t0
    summary.seconds_embedding += t2 - t1
    summary.seconds_upserting += t4 - t3
    summary.seconds_database += (t3 - t2) + (t5 - t4)


def embed(embedder: Embedder, docs: list[Document], chunks: dict[int, list[Chunk]]
          ) -> tuple[dict[int, list[list[float]]], dict[int, str]]:
    """Vectors per document, and the reason per document the provider refused.

    The whole batch goes in as few requests as the limits allow; if the provider refuses it, each document
    is sent alone to find the ones at fault.
    """
    docs = [doc for doc in docs if chunks[doc.id]]
    try:
        flat = embedder.embed([c.embed_text for doc in docs for c in chunks[doc.id]])
    except EmbeddingRejected as exc:
        if len(docs) == 1:
            return {}, {docs[0].id: str(exc)}
        vectors, failed = {}, {}
        for doc in docs:
            try:
                vectors[doc.id] = embedder.embed([c.embed_text for c in chunks[doc.id]])
            except EmbeddingRejected as refused:
                failed[doc.id] = str(refused)
        return vectors, failed
    vectors, start = {}, 0
    for doc in docs:
        vectors[doc.id] = flat[start:start + len(chunks[doc.id])]
        start += len(chunks[doc.id])
    return vectors, {}


def _point(doc: Document, chunk: Chunk, vector: list[float], count: int) -> KnowledgePoint:
    payload = {"tenant_id": doc.tenant_id, "document_id": doc.id, "chunk_index": chunk.index, "chunk_count": count,
               "title": doc.title, "source": doc.source, "updated_at": doc.updated_at.isoformat(),
               "text": chunk.text}
    return KnowledgePoint(id=point_id(doc.id, chunk.index), vector=vector, payload=payload)
