"""``appliance backup`` / ``restore`` with a Qdrant server (``QDRANT_URL``): the collection travels through the
server's snapshot API. There is no Qdrant server binary here, so the servers are ``qdrant_server.py``, which
speaks that API over an opaque blob per collection: this checks the appliance's side of the protocol (the
requests, the API key, the download streamed, the snapshot deleted afterwards, the upload and its checksum),
not Qdrant's own snapshots. PostgreSQL is real; the commands run as subprocesses."""

from __future__ import annotations

import json
import tarfile

import psycopg
import pytest

from appliance.kernel.protocol.db.migrate import migrate
from tests.appliance.harness import base_env, cli
from tests.packs.knowledge.qdrant_server import QdrantSnapshotServer

pytestmark = pytest.mark.process

KEY = "test-qdrant-api-key-0123456789"
COLLECTION = "bharat_crm_knowledge"


@pytest.fixture
def servers():
    content = b"the source collection " * 50_000  # about 1 MB: streamed, not read at once
    source = QdrantSnapshotServer({COLLECTION}, {COLLECTION: content}, api_key=KEY).start()
    target = QdrantSnapshotServer({COLLECTION}, {COLLECTION: b"what the target had"}, api_key=KEY).start()
    yield source, target
    source.stop()
    target.stop()


def test_the_collection_goes_through_the_servers_snapshot_api(tmp_path, servers, postgres_server):
    source, target = servers

    def database(prefix: str) -> str:
        url = postgres_server.create_database(prefix)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        return url

    env = {**base_env(tmp_path / "home"), "REDIS_URL": "redis://127.0.0.1:1/0", "QDRANT_API_KEY": KEY}
    made = cli({**env, "DATABASE_URL": database("qs"), "QDRANT_URL": source.url}, "backup", "--output",
               str(tmp_path))
    assert made.returncode == 0, made.stderr
    archive = made.stdout.splitlines()[-1]
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    info = manifest["parts"]["knowledge"]
    assert info["qdrant"] == "server" and info["collection"] == COLLECTION and info["server"] == source.url
    assert KEY not in json.dumps(manifest)
    assert manifest["members"]["knowledge/collection.snapshot"]["size"] == len(source.contents[COLLECTION])
    assert source.snapshots[COLLECTION] == [] and source.snapshot_data == {}, "deleted from the server"

    embedded = cli({**env, "DATABASE_URL": database("qe")}, "restore", archive)
    assert embedded.returncode == 2, embedded.stdout + embedded.stderr
    assert "server Qdrant" in embedded.stderr and "knowledge reindex" in embedded.stderr

    restored = cli({**env, "DATABASE_URL": database("qt"), "QDRANT_URL": target.url}, "restore", archive)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert target.contents[COLLECTION] == source.contents[COLLECTION]


def test_a_collection_missing_on_the_server_is_recorded_and_left_alone(tmp_path, servers, postgres_server):
    source, target = servers
    url = postgres_server.create_database("qm")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    env = {**base_env(tmp_path / "home"), "REDIS_URL": "redis://127.0.0.1:1/0", "QDRANT_API_KEY": KEY,
           "DATABASE_URL": url, "QDRANT_COLLECTION": "kb_other"}
    made = cli({**env, "QDRANT_URL": source.url}, "backup", "--output", str(tmp_path))
    assert made.returncode == 0, made.stderr
    restored = cli({**env, "QDRANT_URL": target.url}, "restore", made.stdout.splitlines()[-1])
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "kb_other left as it is" in restored.stdout and "kb_other" not in target.contents
