"""The ``knowledge-snapshots`` job. Server mode talks real HTTP to a local server speaking Qdrant's snapshot
REST API (``tests/packs/knowledge/qdrant_server.py``; there is no Qdrant server binary here); embedded mode has no
snapshots and says so."""

from __future__ import annotations

import pytest

from appliance.packs.knowledge import services, snapshots
from tests.packs.knowledge.qdrant_server import QdrantSnapshotServer

COLLECTION = "bharat_crm_knowledge"


@pytest.fixture
def qdrant_server():
    server = QdrantSnapshotServer({COLLECTION}).start()
    yield server
    server.stop()


def test_daily_snapshot_keeps_the_newest_n(kconfig, make_ctx, qdrant_server):
    config = kconfig(QDRANT_URL=qdrant_server.url, QDRANT_PREFER_GRPC="false", QDRANT_SNAPSHOT_KEEP="2")
    try:
        results = [snapshots.run(make_ctx(config)) for _ in range(4)]
    finally:
        make_ctx.services.pop(services.STORE).close()
    names = [r["created"] for r in results]
    assert len(set(names)) == 4 and all(name.startswith(COLLECTION) for name in names)
    assert [r["deleted"] for r in results] == [[], [], [names[0]], [names[1]]]
    assert [s["name"] for s in qdrant_server.snapshots[COLLECTION]] == names[2:]


def test_snapshot_of_a_missing_collection_is_skipped(kconfig, make_ctx, qdrant_server):
    config = kconfig(QDRANT_URL=qdrant_server.url, QDRANT_PREFER_GRPC="false", QDRANT_COLLECTION="kb_other")
    try:
        result = snapshots.run(make_ctx(config))
    finally:
        make_ctx.services.pop(services.STORE).close()
    assert result == {"skipped": "collection kb_other does not exist yet"}
    assert qdrant_server.snapshots[COLLECTION] == []


def test_embedded_mode_has_no_snapshots(kconfig, make_ctx):
    result = snapshots.run(make_ctx(kconfig()))
    assert "embedded Qdrant has no snapshots" in result["skipped"] and "QDRANT_URL" in result["skipped"]
