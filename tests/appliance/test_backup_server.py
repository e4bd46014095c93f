"""``appliance backup`` / ``restore`` with a Qdrant server (``QDRANT_URL``): the collection travels through the
server's snapshot API. No registry here carries the Qdrant server, so the servers are
``tests/appliance/qdrant_standin.py``, which speaks that API (as Qdrant's reference describes it) over an
opaque blob per collection: this checks the appliance's side of the protocol (requests, API key, streaming,
the snapshot deleted afterwards, the upload with its checksum), not Qdrant's own snapshots. PostgreSQL is real."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import httpx
import psycopg
import pytest

from appliance.kernel.db.migrate import migrate
from tests.appliance.harness import REPO, STANDIN_QDRANT, base_env, cli
from tests.services import free_port, wait_until

pytestmark = pytest.mark.process

KEY = "standin-api-key-0123456789"
COLLECTION = "bharat_crm_knowledge"


@pytest.fixture
def qdrant_servers():
    started: list[subprocess.Popen] = []

    def start() -> str:
        port = free_port()
        env = {"QDRANT__SERVICE__HTTP_PORT": str(port), "QDRANT__SERVICE__API_KEY": KEY, "PATH": "/usr/bin:/bin"}
        started.append(subprocess.Popen([sys.executable, str(STANDIN_QDRANT), "--config-path",
                                         str(REPO / "config" / "qdrant.yaml")], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200, 10, "qdrant stand-in")
        return url

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def test_the_collection_goes_through_the_servers_snapshot_api(tmp_path, qdrant_servers, postgres_server):
    def database(prefix: str) -> str:
        url = postgres_server.create_database(prefix)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        return url

    source, target = qdrant_servers(), qdrant_servers()
    content = b"the source collection " * 50_000  # about 1 MB: streamed, not one read
    auth = {"api-key": KEY}
    httpx.put(f"{source}/collections/{COLLECTION}", content=content, headers=auth).raise_for_status()
    httpx.put(f"{target}/collections/{COLLECTION}", content=b"what the target had", headers=auth).raise_for_status()
    env = {**base_env(tmp_path / "home"), "REDIS_URL": "redis://127.0.0.1:1/0", "QDRANT_API_KEY": KEY}

    made = cli({**env, "DATABASE_URL": database("qs"), "QDRANT_URL": source},
               "backup", "--output", str(tmp_path))
    assert made.returncode == 0, made.stderr
    with tarfile.open(made.stdout.splitlines()[-1]) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    info = manifest["parts"]["knowledge"]
    assert info["qdrant"] == "server" and info["collection"] == COLLECTION and info["server"] == source
    assert KEY not in json.dumps(manifest)
    assert manifest["members"]["knowledge/collection.snapshot"]["size"] == len(content)
    listed = httpx.get(f"{source}/collections/{COLLECTION}/snapshots", headers=auth).json()["result"]
    assert listed == [], "the snapshot is deleted from the server once downloaded"

    embedded = cli({**env, "DATABASE_URL": database("qe")}, "restore",
                   made.stdout.splitlines()[-1])
    assert embedded.returncode == 2 and "Qdrant server" not in embedded.stdout, embedded.stderr
    assert "server Qdrant" in embedded.stderr and "knowledge reindex" in embedded.stderr

    restored = cli({**env, "DATABASE_URL": database("qt"), "QDRANT_URL": target},
                   "restore", made.stdout.splitlines()[-1])
    assert restored.returncode == 0, restored.stdout + restored.stderr
    snapshot = httpx.post(f"{target}/collections/{COLLECTION}/snapshots", headers=auth).json()["result"]
    assert httpx.get(f"{target}/collections/{COLLECTION}/snapshots/{snapshot['name']}",
                     headers=auth).content == content
