"""``scripts/fetch-qdrant``, which ``scripts/install`` and ``Dockerfile.worker`` use to install the pinned Qdrant
release. No release can be downloaded here, so a local HTTP server plays the mirror (``QDRANT_DOWNLOAD_URL``)
and serves an archive laid out like the official one whose ``qdrant`` is the test STAND-IN
(``tests/appliance/qdrant_standin.py``, speaking Qdrant's probe API); a pin file names its sha256.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.packs.knowledge.embedder import LocalEmbedder
from appliance.packs.knowledge.store import KnowledgePoint, open_store, point_id
from appliance.supervise.plan import plan_services, supervisor_env
from tests.appliance.harness import REPO, STANDIN_QDRANT, Appliance, appliance_home, base_env
from tests.local_http import LocalServer
from tests.services import free_port
from tests.worker.harness import write_jobs_file

FETCH = REPO / "scripts" / "fetch-qdrant"
PIN = REPO / "config" / "qdrant-release.toml"
ARCHIVE = "qdrant-test-unknown-linux-musl.tar.gz"


class Mirror:
    """A directory served over HTTP on loopback, counting the requests."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.server = LocalServer(functools.partial(Handler, directory=str(root)), "qdrant-mirror").start()

    @property
    def url(self) -> str:
        return self.server.origin


def release_archive() -> bytes:
    """A gzip'd tar holding one top-level ``qdrant``, executable, as Qdrant's release archives do."""
    data = STANDIN_QDRANT.read_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        member = tarfile.TarInfo("qdrant")
        member.size, member.mode = len(data), 0o755
        tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


def write_pin(path: Path, sha256: str) -> Path:
    """A pin like config/qdrant-release.toml naming the test archive for every architecture."""
    archives = "".join(f'[archives.{arch}]\nname = "{ARCHIVE}"\nsha256 = "{sha256}"\n\n'
                       for arch in ("x86_64", "aarch64"))
    path.write_text(f'version = "0.0.0-test"\ndownload = "http://127.0.0.1:9/v{{version}}"\n\n{archives}')
    return path


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    archive = release_archive()
    (root / ARCHIVE).write_bytes(archive)
    served = Mirror(root)
    served.sha256 = hashlib.sha256(archive).hexdigest()
    yield served
    served.server.stop()


def fetch(into: Path, pin: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QDRANT")}
    clean["PATH"] = "/usr/bin:/bin"
    return subprocess.run([sys.executable, str(FETCH), "--into", str(into), "--release", str(pin), *extra],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_the_pin_names_both_architectures_with_sha256_and_the_image_uses_it():
    pin = tomllib.loads(PIN.read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+", pin["version"])
    for arch in ("x86_64", "aarch64"):
        assert re.fullmatch(r"[0-9a-f]{64}", pin["archives"][arch]["sha256"])
        assert pin["archives"][arch]["name"] == f"qdrant-{arch}-unknown-linux-musl.tar.gz"
    dockerfile = (REPO / "Dockerfile.worker").read_text()
    assert "config/qdrant-release.toml" in dockerfile and "scripts/fetch-qdrant" in dockerfile
    assert "fetch-qdrant --into .venv/bin --unless-present" in (REPO / "scripts" / "install").read_text()


def test_installs_the_verified_binary_once(mirror, tmp_path):
    into = tmp_path / "bin"
    done = fetch(into, write_pin(tmp_path / "pin.toml", mirror.sha256), "--unless-present",
                 QDRANT_DOWNLOAD_URL=mirror.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"install: Qdrant 0.0.0-test installed as {into}/qdrant (sha256 verified)"]
    assert (into / "qdrant").read_bytes() == STANDIN_QDRANT.read_bytes() and os.access(into / "qdrant", os.X_OK)
    assert sorted(p.name for p in into.iterdir()) == [".qdrant-release", "qdrant"]

    again = fetch(into, write_pin(tmp_path / "pin.toml", mirror.sha256), "--unless-present",
                  QDRANT_DOWNLOAD_URL=mirror.url)
    assert again.returncode == 0 and again.stderr == "" and mirror.requests == [f"/{ARCHIVE}"]


def test_nothing_is_fetched_when_a_binary_is_configured(mirror, tmp_path):
    done = fetch(tmp_path / "bin", write_pin(tmp_path / "pin.toml", mirror.sha256), "--unless-present",
                 QDRANT_DOWNLOAD_URL=mirror.url, QDRANT_BIN=str(STANDIN_QDRANT))
    assert done.returncode == 0 and done.stderr == "" and mirror.requests == []
    assert not (tmp_path / "bin").exists()


def test_an_archive_with_another_checksum_is_refused_and_nothing_installed(mirror, tmp_path):
    pin = write_pin(tmp_path / "pin.toml", "0" * 64)
    done = fetch(tmp_path / "bin", pin, QDRANT_DOWNLOAD_URL=mirror.url)
    assert done.returncode == 5
    assert done.stderr.splitlines() == [
        f"install: refused Qdrant 0.0.0-test from {mirror.url}/{ARCHIVE}: its sha256 is {mirror.sha256}, the pin "
        f"in {pin} says {'0' * 64}; nothing installed"]
    assert list((tmp_path / "bin").iterdir()) == []


def test_offline_is_one_line_and_the_appliance_falls_back_to_embedded_qdrant(tmp_path):
    into = tmp_path / "bin"
    unreachable = f"http://127.0.0.1:{free_port()}"
    done = fetch(into, write_pin(tmp_path / "pin.toml", "0" * 64), QDRANT_DOWNLOAD_URL=unreachable)
    assert done.returncode == 3
    [line] = done.stderr.splitlines()
    assert line.startswith(f"install: could not download Qdrant 0.0.0-test from {unreachable}/{ARCHIVE} (")
    assert "embedded Qdrant (Qdrant Edge)" in line and "QDRANT_DOWNLOAD_URL" in line
    assert list(into.iterdir()) == []

    config = load_settings({"APPLIANCE_HOME": str(tmp_path / "home"), "EMBEDDING_DIMENSIONS": "8"}, env_file=None)
    assert plan_services(config, which=lambda name: shutil.which(name, path=str(into))).qdrant == "embedded"
    embedder = LocalEmbedder(8)
    with open_store(config) as store:
        store.ensure(embedder.identity)
        store.upsert([KnowledgePoint(point_id(1, 0), embedder.embed(["refunds"])[0],
                                     {"tenant_id": 1, "document_id": 1, "text": "refunds"})])
        assert [h.document_id for h in store.search(embedder.embed(["refunds"])[0], 1, 5)] == [1]


def test_on_a_host_the_supervised_server_listens_on_loopback_only(tmp_path):
    config = load_settings({"APPLIANCE_HOME": str(tmp_path / "home")}, env_file=None)
    exported = supervisor_env(config, plan_services(config, which=lambda _: str(STANDIN_QDRANT)))
    assert exported["QDRANT__SERVICE__HOST"] == "127.0.0.1"


@pytest.mark.process
def test_the_installed_binary_runs_as_the_supervised_qdrant_program(mirror, tmp_path, redis_server, migrated_db):
    """scripts/run puts the install directory on PATH; the appliance then supervises the installed binary."""
    into = tmp_path / "bin"
    assert fetch(into, write_pin(tmp_path / "pin.toml", mirror.sha256), QDRANT_DOWNLOAD_URL=mirror.url).returncode == 0
    jobs = write_jobs_file(tmp_path / "jobs.toml", {"tick": {"callable": "tests.worker.sample_jobs:tick",
                                                             "schedule": "1s", "lock_ttl": 3}})
    app = Appliance(base_env(appliance_home(), REDIS_URL=redis_server.url, DATABASE_URL=migrated_db,
                             QDRANT_URL=f"http://127.0.0.1:{free_port()}", PATH=f"{into}:/usr/bin:/bin",
                             APPLIANCE_JOBS_FILE=str(jobs), JOBS_ENABLED="tick"))
    try:
        states = app.wait_states({"qdrant": "RUNNING", "worker": "RUNNING", "sidecar": "RUNNING"})
        command = Path(f"/proc/{states['qdrant'][1]}/cmdline").read_bytes().split(b"\0")
        assert str(into / "qdrant").encode() in command, command
        health = app.wait_health()
        assert health["services"]["qdrant"] == "healthy", health
        code, _ = app.terminate()
        assert code == 0, app.output()[-3000:]
    finally:
        app.close()
