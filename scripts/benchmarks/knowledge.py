"""Knowledge benchmarks, in one run:

1. The two embedded Qdrant stores side by side on the same generated points: Qdrant Edge (the appliance's
   embedded store, through ``appliance.packs.knowledge.store.open_store``) and qdrant-client's local mode (the
   embedded store of earlier releases, through qdrant-client as that store used it). Per store: upsert rate
   in batches of 256 (written and durable), tenant-filtered top-5 search latency (best chunk per document, as
   ``appliance knowledge search`` asks) and the time to open the filled storage.
2. The indexer end to end: chunks per second (PostgreSQL rows -> chunks -> local embedder -> Qdrant Edge),
   and the share of the run's time spent chunking, embedding, upserting into Qdrant and in PostgreSQL, all
   measured in the same run. Starts its own PostgreSQL in a temp dir.

    python -P scripts/benchmarks/knowledge.py [--points N] [--local-points N] [--documents N] [--dimensions D]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.protocol.db.migrate import migrate
from appliance.packs.knowledge import indexer
from appliance.packs.knowledge.embedder import Identity
from appliance.packs.knowledge.store import KnowledgePoint, metadata, open_store
from tests.runs import run_context
from tests.services import PostgresServer

JOB = "knowledge-indexer"
TENANTS = 10
CHUNKS_PER_DOCUMENT = 4
BATCH = 256
QUERIES = 200
TEXT = "Refunds for annual plans are prorated and paid back to the original card within 14 days. " * 9


def make_points(count: int, dimensions: int, seed: int = 7) -> list[KnowledgePoint]:
    """Unit vectors with the payload of real chunks (about 800 characters of text each)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dimensions), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = []
    for i, vector in enumerate(vectors):
        document = i // CHUNKS_PER_DOCUMENT
        points.append(KnowledgePoint(str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))), vector.tolist(),
                                     {"tenant_id": document % TENANTS, "document_id": document,
                                      "chunk_index": i % CHUNKS_PER_DOCUMENT, "chunk_count": CHUNKS_PER_DOCUMENT,
                                      "title": f"Document {document}", "source": None,
                                      "updated_at": "2026-11-30T00:00:00+00:00", "text": TEXT}))
    return points


def queries(count: int, dimensions: int, seed: int = 11) -> list[tuple[list[float], int]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dimensions), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [(vector.tolist(), i % TENANTS) for i, vector in enumerate(vectors)]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_edge(home: Path, points: list[KnowledgePoint], asks: list[tuple[list[float], int]]) -> dict:
    dimensions = len(points[0].vector)
    config = load_settings({"APPLIANCE_HOME": str(home), "EMBEDDING_DIMENSIONS": str(dimensions)}, env_file=None)
    identity = Identity("local", "bench", dimensions)
    with open_store(config) as store:
        store.ensure(identity)
        upsert = sum(timed(lambda b=points[s:s + BATCH]: store.upsert(b)) for s in range(0, len(points), BATCH))
    started = time.perf_counter()
    store = open_store(config)
    store.check(identity)
    store.count()
    opened = time.perf_counter() - started
    try:
        latencies = [timed(lambda v=v, t=t: store.search(v, t, 5)) for v, t in asks]
    finally:
        store.close()
    return {"upsert": len(points) / upsert, "open": opened, "latencies": latencies}


def bench_local(path: Path, points: list[KnowledgePoint], asks: list[tuple[list[float], int]]) -> dict:
    from qdrant_client import QdrantClient, models

    collection = "bench"
    dimensions = len(points[0].vector)
    # Its warning past 20,000 points is the point of the comparison, not news.
    warnings.filterwarnings("ignore", message="Local mode is not recommended")
    client = QdrantClient(path=str(path))
    client.create_collection(collection, metadata=metadata(Identity("local", "bench", dimensions)),
                             vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE))

    def write(batch: list[KnowledgePoint]) -> None:
        client.upsert(collection, points=[models.PointStruct(id=p.id, vector=p.vector, payload=p.payload)
                                          for p in batch], wait=True)

    upsert = sum(timed(lambda b=points[s:s + BATCH]: write(b)) for s in range(0, len(points), BATCH))
    client.close()
    started = time.perf_counter()
    client = QdrantClient(path=str(path))
    client.count(collection)
    opened = time.perf_counter() - started

    def search(vector: list[float], tenant: int) -> None:
        only = models.Filter(must=[models.FieldCondition(key="tenant_id", match=models.MatchValue(value=tenant))])
        client.query_points_groups(collection, group_by="document_id", query=vector, query_filter=only, limit=5,
                                   group_size=1, with_payload=True)

    try:
        latencies = [timed(lambda v=v, t=t: search(v, t)) for v, t in asks]
    finally:
        client.close()
    return {"upsert": len(points) / upsert, "open": opened, "latencies": latencies}


def line(name: str, points: int, result: dict) -> str:
    lat = [s * 1000 for s in result["latencies"]]
    return (f"  {name:<26} {points:>7,} points: upsert {result['upsert']:>7,.0f} points/s | tenant-filtered top-5 "
            f"p50 {statistics.median(lat):7.1f} ms, p99 {percentile(lat, 99):7.1f} ms ({len(lat)} queries) | "
            f"open {result['open']:6.2f} s")


def compare(points: int, local_points: int, dimensions: int, queries_count: int = QUERIES) -> None:
    """Print one line per store, each on the first ``points`` / ``local_points`` of the same points."""
    print(f"embedded stores: {dimensions} dimensions, {TENANTS} tenants, {CHUNKS_PER_DOCUMENT} chunks per document, "
          f"upserts of {BATCH}; goals for Qdrant Edge at 50,000 points: upsert >= 2,000/s, p99 <= 20 ms, open <= 1 s")
    work = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    try:
        data = make_points(max(points, local_points), dimensions)
        asks = queries(queries_count, dimensions)
        print(line("Qdrant Edge (qdrant-edge)", points, bench_edge(work / "edge", data[:points], asks)), flush=True)
        local_asks = asks[:max(20, queries_count // 10)]
        print(line("qdrant-client local mode", local_points,
                   bench_local(work / "local", data[:local_points], local_asks)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)



WORDS = ["invoice", "refund", "warranty", "shipping", "order", "customer", "plan", "annual", "monthly", "support",
         "ticket", "agent", "call", "campaign", "lead", "reminder", "tenant", "trial", "payment", "card", "credit",
         "policy", "days", "business", "hours", "team"]


def make_body(rng: random.Random, chars: int) -> str:
    """Paragraphs of random sentences, about ``chars`` characters."""
    paragraphs, size = [], 0
    while size < chars:
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
                     for _ in range(rng.randint(3, 6))]
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def fill(url: str, documents: int, chars: int) -> None:
    rng = random.Random(6)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        tenant = conn.execute("INSERT INTO tenants (name) VALUES ('bench') RETURNING id").fetchone()[0]
        with conn.cursor().copy("COPY knowledge_documents (tenant_id, title, body) FROM STDIN") as copy:
            for i in range(documents):
                copy.write_row((tenant, f"Document {i}", make_body(rng, chars)))


def run_once(pool: ConnectionPool, config) -> tuple[dict, float]:
    ctx = run_context(pool, JOB, config, services={})
    t0 = time.perf_counter()
    summary = indexer.run(ctx)
    return summary, time.perf_counter() - t0


def report(label: str, summary: dict, seconds: float) -> None:
    parts = {name: summary[f"seconds_{name}"] for name in ("chunking", "embedding", "upserting", "database")}
    other = max(seconds - sum(parts.values()), 0.0)
    shares = ", ".join(f"{name} {value / seconds * 100:.1f}%" for name, value in [*parts.items(), ("other", other)])
    print(f"{label}: {summary['documents']} documents, {summary['chunks']} chunks in {seconds:.2f}s = "
          f"{summary['chunks'] / seconds:,.0f} chunks/s ({summary['documents'] / seconds:,.1f} documents/s)")
    print(f"  time: {shares}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50_000, help="points in Qdrant Edge")
    parser.add_argument("--local-points", type=int, default=50_000,
                        help="points in qdrant-client's local mode (about 2 minutes at 50,000)")
    parser.add_argument("--documents", type=int, default=1000, help="documents the indexer run indexes")
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--chars", type=int, default=3000, help="characters per document body")
    args = parser.parse_args(argv)
    compare(args.points, args.local_points, args.dimensions)
    postgres = PostgresServer().start()
    home = Path(tempfile.mkdtemp(prefix="bench-knowledge-"))
    try:
        url = postgres.create_database("bench")
        fill(url, args.documents, args.chars)
        config = load_settings({"APPLIANCE_HOME": str(home), "DATABASE_URL": url, "LOG_LEVEL": "warning",
                              "EMBEDDING_DIMENSIONS": str(args.dimensions)}, env_file=None)
        k = config.knowledge
        print(f"indexer: local embedder, {args.dimensions} dimensions, Qdrant Edge; chunks of {k.chunk_size} chars "
              f"(overlap {k.chunk_overlap}), {k.batch_size} documents per batch, bodies of ~{args.chars} chars")
        with ConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": False}) as pool:
            report("first index (new collection)", *run_once(pool, config))
            with pool.connection() as conn:
                conn.execute("UPDATE knowledge_documents SET indexed_version = NULL")
            report("reindex (same points overwritten)", *run_once(pool, config))
    finally:
        postgres.cleanup()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
