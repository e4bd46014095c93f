"""qdrant-client's embedded local mode (no Qdrant server binary here): its storage admits one client, so the
stores of one process share one client per storage directory and free the storage when the last closes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from qdrant_client import models

from appliance.knowledge.embedder import LocalEmbedder
from appliance.knowledge.store import StorageBusy, open_store, point_id

REPO = Path(__file__).resolve().parents[2]
OPEN_ELSEWHERE = """
import sys
from qdrant_client import QdrantClient
try:
    QdrantClient(path=sys.argv[1]).close()
except RuntimeError as exc:
    print(exc)
    sys.exit(3)
"""


def open_in_another_process(path: Path) -> int:
    return subprocess.run([sys.executable, "-c", OPEN_ELSEWHERE, str(path)], capture_output=True, timeout=60).returncode


def test_stores_of_one_process_share_a_client_and_free_the_storage_after_the_last(kconfig):
    config = kconfig()
    embedder = LocalEmbedder(8)
    path = config.core.qdrant_path
    with open_store(config, wait=0) as first:
        with open_store(config, wait=0) as second:  # a second client on the same path would be refused
            assert second.client is first.client
            first.ensure(embedder.identity)
        assert first.exists(), "the client stays open while the first store uses it"
        assert open_in_another_process(path) == 3

        def write(start: int) -> None:
            with open_store(config, wait=0) as store:
                for i in range(start, start + 40):
                    vector = embedder.embed([f"note {i}"])[0]
                    store.upsert([models.PointStruct(id=point_id(i, 0), vector=vector,
                                                     payload={"tenant_id": 1, "document_id": i})])

        threads = [threading.Thread(target=write, args=(n * 40,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert first.count() == 120
    assert open_in_another_process(path) == 0  # the last store closed the client


def test_storage_held_by_another_process_is_a_clear_error(kconfig):
    config = kconfig()
    path = config.core.qdrant_path
    path.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from qdrant_client import QdrantClient;"
                               "c = QdrantClient(path=sys.argv[1]); print('open', flush=True); sys.stdin.read();"
                               "c.close()", str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        try:
            open_store(config, wait=0.3)
        except StorageBusy as exc:
            message = str(exc)
        else:
            raise AssertionError("the storage was opened twice")
        assert "in use by another process" in message and "QDRANT_URL" in message
    finally:
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()
    with open_store(config, wait=0) as store:
        assert store.exists() is False
