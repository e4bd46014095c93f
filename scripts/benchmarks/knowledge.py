"""Knowledge indexer benchmark: chunks per second end to end (PostgreSQL rows -> chunks -> local embedder ->
qdrant-client's embedded local mode), and the share of the run's time spent chunking, embedding, upserting
into Qdrant and in PostgreSQL, all measured in the same run. Starts its own PostgreSQL in a temp dir.

    python scripts/benchmarks/knowledge.py [--documents N] [--dimensions D] [--chars C]
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

from appliance.config import load_config
from appliance.context import RunContext
from appliance.db.migrate import migrate
from appliance.fencing import issue_fence
from appliance.knowledge import indexer
from tests.services import PostgresServer

JOB = "knowledge-indexer"
WORDS = ("invoice refund warranty shipping order customer plan annual monthly support ticket agent call "
         "campaign lead reminder tenant trial payment card credit policy days business hours team").split()


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
    def fence() -> int:
        with pool.connection() as conn:
            return issue_fence(conn, JOB)

    ctx = RunContext(job=JOB, slot=datetime.now(timezone.utc), run_id="bench", attempt=1, owner="bench",
                     config=config, redis=None, db=pool, services={}, _fence_source=fence,
                     log=logging.LoggerAdapter(logging.getLogger("bench.knowledge"), {}))
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
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--chars", type=int, default=3000, help="characters per document body")
    args = parser.parse_args(argv)
    postgres = PostgresServer().start()
    home = Path(tempfile.mkdtemp(prefix="bench-knowledge-"))
    try:
        url = postgres.create_database("bench")
        fill(url, args.documents, args.chars)
        config = load_config({"APPLIANCE_HOME": str(home), "DATABASE_URL": url, "LOG_LEVEL": "warning",
                              "EMBEDDING_DIMENSIONS": str(args.dimensions)}, env_file=None, with_jobs=False)
        k = config.knowledge
        print(f"local embedder, {args.dimensions} dimensions, embedded Qdrant; chunks of {k.chunk_size} chars "
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
