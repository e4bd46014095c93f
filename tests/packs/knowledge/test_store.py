"""The embedded storage, Qdrant Edge (no Qdrant server binary here): one process at a time behind a file lock
that names its holder, shared by the stores of one process, and carried over from qdrant-client's local
mode of earlier releases. Other processes here are real ``python`` processes opening the same directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from appliance.packs.knowledge import indexer
from appliance.packs.knowledge.embedder import LocalEmbedder
from appliance.packs.knowledge.store import (
    KnowledgePoint,
    StorageBusy,
    embedded_root,
    embedded_state,
    metadata,
    open_store,
    point_id,
)

REPO = Path(__file__).resolve().parents[3]
#: Another process opening the store: prints "open" once it holds it, then waits for a line on stdin.
HOLDER = """
import sys
from appliance.kernel.contract.packs import load_settings
from appliance.packs.knowledge.store import open_store
config = load_settings({"APPLIANCE_HOME": sys.argv[1], "EMBEDDING_DIMENSIONS": "8"}, env_file=None)
with open_store(config, wait=float(sys.argv[2])) as store:
    print("open", flush=True)
    sys.stdin.readline()
"""


def hold_in_another_process(home: Path, wait: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(home), str(wait)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    assert proc.stdin and proc.stdout and proc.stderr  # all three are pipes: hold_in_another_process
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    code = proc.wait(30)
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return code, err


def note(embedder: LocalEmbedder, i: int, tenant: int = 1) -> KnowledgePoint:
    return KnowledgePoint(point_id(i, 0), embedder.embed([f"note {i}"])[0],
                          {"tenant_id": tenant, "document_id": i, "text": f"note {i}"})


def test_stores_of_one_process_share_the_storage_and_free_it_after_the_last(kconfig):
    config = kconfig(EMBEDDING_DIMENSIONS="8")
    home = config.core.home
    embedder = LocalEmbedder(8)
    with open_store(config, wait=0) as first:
        with open_store(config, wait=0) as second:  # a second open in this process shares the first
            assert second.ensure(embedder.identity) is True
        assert first.exists(), "the storage stays open while the first store uses it"
        other = hold_in_another_process(home)
        code, err = stop(other)
        assert code == 1 and "is in use by pid" in err and str(os.getpid()) in err

        def write(start: int) -> None:
            with open_store(config, wait=0) as store:
                for i in range(start, start + 40):
                    store.upsert([note(embedder, i)])

        threads = [threading.Thread(target=write, args=(n * 40,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert first.count() == 120 and first.count(tenant_id=2) == 0
    other = hold_in_another_process(home)
    assert other.stdout.readline().strip() == "open"  # the last store closed: another process may open it
    assert stop(other)[0] == 0
    with open_store(config, wait=0) as store:  # what was written survived closing and reopening
        assert store.count() == 120


def test_busy_storage_names_its_holder_and_a_waiting_command_gets_it_when_freed(kconfig):
    config = kconfig(EMBEDDING_DIMENSIONS="8", QDRANT_LOCAL_WAIT="0.3")
    holder = hold_in_another_process(config.core.home)
    try:
        assert holder.stdout.readline().strip() == "open"
        started = time.monotonic()
        with pytest.raises(StorageBusy) as busy:
            open_store(config)
        assert time.monotonic() - started >= 0.3
        message = str(busy.value)
        assert f"pid {holder.pid} (" in message and "QDRANT_LOCAL_WAIT" in message and "QDRANT_URL" in message
        assert embedded_state(config)["in_use_by"].startswith(f"pid {holder.pid} ")

        threading.Timer(0.5, holder.stdin.close).start()
        with open_store(config, wait=20) as store:  # waits for the holder to let go
            assert store.exists() is False
    finally:
        stop(holder)


def test_a_holder_killed_with_sigkill_leaves_the_storage_usable(kconfig):
    """The lock is the kernel's: it goes with the process, and the shard's write-ahead log replays."""
    config = kconfig(EMBEDDING_DIMENSIONS="8")
    embedder = LocalEmbedder(8)
    with open_store(config) as store:
        store.ensure(embedder.identity)
        store.upsert([note(embedder, i) for i in range(10)])
    holder = hold_in_another_process(config.core.home)
    assert holder.stdout.readline().strip() == "open"
    os.kill(holder.pid, signal.SIGKILL)
    assert stop(holder)[0] == -signal.SIGKILL
    with open_store(config, wait=0) as store:
        store.check(embedder.identity)
        assert store.count() == 10
        assert store.search(embedder.embed(["note 3"])[0], 1, 1)[0].document_id == 3


def test_search_returns_the_best_chunk_of_each_document_even_when_one_document_crowds_the_top(kconfig):
    config = kconfig(EMBEDDING_DIMENSIONS="8")
    embedder = LocalEmbedder(8)
    crowd = [KnowledgePoint(point_id(1, i), embedder.embed(["refund"])[0],
                            {"tenant_id": 1, "document_id": 1, "chunk_index": i, "text": "refund"}) for i in range(60)]
    others = [KnowledgePoint(point_id(d, 0), embedder.embed([f"refund policy {d}"])[0],
                             {"tenant_id": 1, "document_id": d, "chunk_index": 0, "text": "x"}) for d in range(2, 5)]
    with open_store(config) as store:
        store.ensure(embedder.identity)
        store.upsert(crowd + others)
        hits = store.search(embedder.embed(["refund"])[0], 1, 3)
    assert next(h.document_id for h in hits) == 1 and len({h.document_id for h in hits}) == 3


def test_points_of_the_previous_embedded_mode_are_carried_over(kconfig, make_ctx, sql, tenants):
    """A data directory of an earlier release: qdrant-client's local mode under APPLIANCE_HOME/qdrant, its
    documents recorded as indexed in PostgreSQL. The first indexer run copies the points into Qdrant Edge
    without embedding anything again, and searches find them."""
    config = kconfig()
    a, b = tenants
    embedder = LocalEmbedder(config.knowledge.embedding_dimensions)
    texts = {a: "Refunds for annual plans are prorated.", b: "Credits are issued instead of refunds."}
    docs = {t: sql("INSERT INTO knowledge_documents (tenant_id, title, body) VALUES (%s, 'Refunds', %s) "
                   "RETURNING id", (t, body))[0][0] for t, body in texts.items()}
    sql("UPDATE knowledge_documents SET indexed_version = version, indexed_chunks = 1")
    legacy = QdrantClient(path=str(config.core.qdrant_path))
    legacy.create_collection(config.knowledge.collection, metadata=metadata(embedder.identity),
                             vectors_config=models.VectorParams(size=embedder.identity.dimensions,
                                                                distance=models.Distance.COSINE))
    legacy.upsert(config.knowledge.collection, points=[
        models.PointStruct(id=point_id(docs[t], 0), vector=embedder.embed([f"Refunds\n\n{body}"])[0],
                           payload={"tenant_id": t, "document_id": docs[t], "chunk_index": 0, "chunk_count": 1,
                                    "title": "Refunds", "text": body}) for t, body in texts.items()])
    legacy.close()

    summary = indexer.run(make_ctx(config))
    assert summary["created_collection"] is False and summary["documents"] == 0  # nothing embedded again
    with open_store(config) as store:
        assert store.count() == 2
        hit = store.search(embedder.embed(["credits instead of refunds"])[0], b, 5)
    assert [h.document_id for h in hit] == [docs[b]] and hit[0].text == texts[b]
    meta = json.loads((embedded_root(config) / config.knowledge.collection / "collection.json").read_text())
    assert meta["migrated_from"] == str(config.core.qdrant_path)


def test_previous_points_of_another_embedder_are_indexed_again_from_postgresql(kconfig, make_ctx, sql, tenants):
    config = kconfig()
    doc = sql("INSERT INTO knowledge_documents (tenant_id, title, body) VALUES (%s, 'Refunds', 'Within 14 days.') "
              "RETURNING id", (tenants[0],))[0][0]
    sql("UPDATE knowledge_documents SET indexed_version = version, indexed_chunks = 1")
    legacy = QdrantClient(path=str(config.core.qdrant_path))
    legacy.create_collection(config.knowledge.collection, vectors_config=models.VectorParams(
        size=config.knowledge.embedding_dimensions, distance=models.Distance.COSINE))
    legacy.upsert(config.knowledge.collection, points=[models.PointStruct(
        id=point_id(doc, 0), vector=[1.0] * config.knowledge.embedding_dimensions,
        payload={"tenant_id": tenants[0], "document_id": doc})])
    legacy.close()

    summary = indexer.run(make_ctx(config))
    assert summary["created_collection"] is True and summary["documents"] == 1
    with open_store(config) as store:
        assert [p.payload["text"] for p in store.points()] == ["Within 14 days."]
