"""``appliance backup`` and ``appliance restore`` against real appliances (``appliance run`` under supervisord,
embedded Redis and PostgreSQL, the embedded Qdrant Edge storage, the local embedder).

- A backup of a running appliance restored into a fresh home gives, once that appliance starts, the same rows
  in every table (the ledger, CRM, knowledge), the same sequences and the same search results.
- A backup taken while the indexer writes is consistent: every document the dump calls indexed has exactly its
  points, of that version, in the archived collection.
- Damaged, foreign and too-new archives, and a home where the appliance runs, are refused with their exit
  code before anything in the target home changes; an external database is restored over its objects.
- A backup never replaces a file, and one that cannot get the embedded storage fails and leaves nothing.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import threading
from pathlib import Path

import psycopg
import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.protocol.db.migrate import migrate
from appliance.packs.knowledge.edge_store import open_edge_store
from appliance.packs.knowledge.storage_lock import StorageLock
from appliance.supervise.pgserver import temporary_server
from appliance.supervise.plan import plan_services
from appliance.supervise.prepare import make_dirs, migrate_database
from tests.appliance.harness import (
    REPO,
    Appliance,
    appliance_home,
    base_env,
    cli,
    contents,
    db_url,
    file_tree,
    processes_of,
)
from tests.services import free_port, wait_until

pytestmark = pytest.mark.process

DOCS = (
    ("Refund policy", "Refunds are paid to the original card within 14 days of the returned goods arriving."),
    ("Office hours", "The support desk answers calls from nine to six on weekdays and is closed on holidays."),
    ("Shipping", "Orders leave the Pune warehouse within two business days; express delivery costs extra."),
)
COLLECTION = "bharat_crm_knowledge"
BUNDLED_STANDIN = REPO / "tests" / "packs" / "knowledge" / "qdrant_server.py"


def add_documents(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for title, body in DOCS:
            conn.execute("INSERT INTO knowledge_documents (tenant_id, title, body) "
                         "SELECT id, %s, %s || ' (' || name || ')' FROM tenants", (title, body))


def all_indexed(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) > 0 AND bool_and(indexed_version = version) "
                            "FROM knowledge_documents").fetchone() == (True,)


def search(env: dict[str, str]) -> list[dict]:
    done = cli(env, "knowledge", "search", "when are refunds paid", "--limit", "5", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["hits"]


@pytest.fixture
def started():
    apps: list[Appliance] = []
    yield apps
    for app in apps:
        app.close()


def worked(home: Path) -> bool:
    """The demo's jobs have run (the ledger has finished runs) and every document is indexed."""
    with psycopg.connect(db_url(home), autocommit=True) as conn:
        runs = conn.execute("SELECT count(*) FROM job_runs WHERE outcome <> 'running'").fetchone()
    return all_indexed(db_url(home)) and runs is not None and runs[0] >= 5


def test_round_trip_into_a_fresh_home_gives_the_same_ledger_crm_and_search(started):
    home = appliance_home()
    env = base_env(home, SCHEDULE_KNOWLEDGE_INDEXER="2s")
    started.append(app := Appliance(env))
    app.wait_states({"worker": "RUNNING", "sidecar": "RUNNING"})
    seeded = cli(env, "seed-demo", "--trigger")
    assert seeded.returncode == 0, seeded.stderr
    add_documents(db_url(home))
    wait_until(lambda: worked(home), 90, "jobs run and documents indexed", interval=0.5)
    # The worker stops so the rows stay as archived; PostgreSQL, Redis and the sidecar keep running.
    assert "stopped" in app.ctl("stop", "worker").stdout
    before, hits = contents(db_url(home)), search(env)
    assert len(before["job_runs"]) >= 5 and before["job_slots"] and len(before["tenants"]) == 3
    assert len(hits) == 5 and hits[0]["title"] == "Refund policy"

    made = cli(env, "backup", "--output", str(home.parent))
    assert made.returncode == 0, made.stderr
    archive = Path(made.stdout.splitlines()[-1])
    assert archive.parent == home.parent and archive.name.endswith(".tar.gz")
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "manifest.json"
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest["postgres"]["format"] == "custom" and manifest["postgres"]["server_major"] >= 15
    assert manifest["parts"]["knowledge"]["collections"] == {COLLECTION: {"points": 9}}
    assert all(len(m["sha256"]) == 64 for m in manifest["members"].values())
    password = (home / "secrets" / "postgres-password").read_text().strip()
    assert password not in json.dumps(manifest) and str(home / "secrets") not in json.dumps(manifest)

    refused = cli(env, "restore", str(archive))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "the appliance is running" in refused.stderr and "supervisord" in refused.stderr
    assert contents(db_url(home)) == before

    fresh = appliance_home()
    fresh_env = base_env(fresh, IS_WORKER="false")
    restored = cli(fresh_env, "restore", str(archive))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "before" not in restored.stdout, "a fresh home had nothing to keep aside"
    started.append(again := Appliance(fresh_env))
    again.wait_states({"postgres": "RUNNING", "sidecar": "RUNNING"})
    assert again.wait_health()["services"]["database"] == "connected"
    assert contents(db_url(fresh)) == before
    assert search(fresh_env) == hits


def test_a_backup_taken_while_the_indexer_writes_is_consistent(started):
    """Documents change all along (new ones, new versions, deletions) while the indexer runs every second; the
    archived collection holds exactly the points of every document the archived database calls indexed."""
    home = appliance_home()
    env = base_env(home, SCHEDULE_KNOWLEDGE_INDEXER="1s", KNOWLEDGE_BATCH_SIZE="5")
    started.append(app := Appliance(env))
    app.wait_states({"worker": "RUNNING"})
    assert cli(env, "seed-demo").returncode == 0
    add_documents(db_url(home))
    wait_until(lambda: all_indexed(db_url(home)), 60, "documents indexed", interval=0.3)
    stop = threading.Event()
    writer = threading.Thread(target=_keep_writing, args=(db_url(home), stop), daemon=True)
    writer.start()
    try:
        made = cli(env, "backup", "--output", str(home.parent))
    finally:
        stop.set()
        writer.join(10)
    assert made.returncode == 0, made.stderr
    fresh = appliance_home()
    assert cli(base_env(fresh), "restore", made.stdout.splitlines()[-1]).returncode == 0
    config = load_settings({"APPLIANCE_HOME": str(fresh)}, env_file=None)
    with temporary_server(config, fresh / "postgres"), psycopg.connect(db_url(fresh), autocommit=True) as conn:
        rows = conn.execute("SELECT id, indexed_version = version, deleted_at IS NULL, indexed_chunks, "
                            "updated_at FROM knowledge_documents").fetchall()
        tombstones = {r[0] for r in conn.execute("SELECT document_id FROM knowledge_deletions")}
    with open_edge_store(config.core.qdrant_edge_path, COLLECTION, fresh / "qdrant", wait=0) as store:
        points = store.points()
    by_doc: dict[int, list[dict]] = {}
    for point in points:
        by_doc.setdefault(point.payload["document_id"], []).append(point.payload)
    changed = 0
    for doc, indexed, alive, chunks, updated in rows:
        if not indexed:
            changed += 1
            continue
        found = by_doc.get(doc, [])
        expected = list(range(chunks)) if alive else []
        assert sorted(p["chunk_index"] for p in found) == expected, f"document {doc}"
        assert all(p["updated_at"] == updated.isoformat() for p in found), f"document {doc}: another version"
    assert set(by_doc) <= {r[0] for r in rows} | tombstones, "no point of a document the database never had"
    assert len(rows) > 9, "documents were added while the backup ran"
    shutil.rmtree(fresh.parent, ignore_errors=True)


def _keep_writing(url: str, stop: threading.Event) -> None:
    """Add a document, change one, soft-delete one and delete one, in turn, until ``stop``."""
    n = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            n += 1
            conn.execute("INSERT INTO knowledge_documents (tenant_id, title, body) SELECT min(id), %s, %s "
                         "FROM tenants", (f"Note {n}", f"Note number {n}. " * (1 + n % 120)))
            conn.execute("UPDATE knowledge_documents SET body = body || ' Edited.' WHERE id = "
                         "(SELECT id FROM knowledge_documents WHERE deleted_at IS NULL ORDER BY random() LIMIT 1)")
            if n % 5 == 0:
                conn.execute("UPDATE knowledge_documents SET deleted_at = now() WHERE id = "
                              "(SELECT max(id) - 2 FROM knowledge_documents)")
            if n % 7 == 0:
                conn.execute("DELETE FROM knowledge_documents WHERE id = (SELECT min(id) + %s FROM "
                              "knowledge_documents)", (n % 3,))
            stop.wait(0.02)


# -- refusals ---------------------------------------------------------------------------------------------

def _home_with_database() -> tuple[Path, dict[str, str]]:
    """A home whose embedded cluster exists and is migrated (as after a first start), the appliance stopped."""
    home = appliance_home()
    config = load_settings({"APPLIANCE_HOME": str(home)}, env_file=None)
    plan = plan_services(config, which=lambda _: None)
    make_dirs(config, plan)
    migrate_database(config, plan)
    return home, base_env(home)


def flip(data: bytes) -> bytes:
    """``data`` with one bit of its middle byte flipped."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


def _retar(source: Path, target: Path, change) -> None:
    """``source``'s members rewritten into ``target`` through ``change(name, data) -> data``."""
    with tarfile.open(source, "r:gz") as old, tarfile.open(target, "w:gz") as new:
        for member in old.getmembers():
            data = change(member.name, old.extractfile(member).read())  # type: ignore[union-attr]
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))


def test_damaged_foreign_and_newer_archives_are_refused_before_anything_changes(tmp_path, keep_umask):
    source, source_env = _home_with_database()
    target, target_env = _home_with_database()
    try:
        made = cli(source_env, "backup", "--output", str(tmp_path))  # the appliance is stopped: a cold backup
        assert made.returncode == 0, made.stderr
        good = Path(made.stdout.splitlines()[-1])
        raw = good.read_bytes()

        flipped = tmp_path / "flipped.tar.gz"
        flipped.write_bytes(flip(raw))
        truncated = tmp_path / "truncated.tar.gz"
        truncated.write_bytes(raw[:len(raw) * 2 // 3])
        tampered = tmp_path / "tampered.tar.gz"
        _retar(good, tampered, lambda name, data: flip(data) if name == "postgres.dump" else data)
        newer = tmp_path / "newer.tar.gz"
        _retar(good, newer, lambda name, data: data.replace(b'"format_version": 1', b'"format_version": 2')
               if name == "manifest.json" else data)
        foreign_tar = tmp_path / "foreign.tar"
        with tarfile.open(foreign_tar, "w") as tar:
            tar.add(REPO / "README.md", "README.md")
        foreign_gz = tmp_path / "foreign.tar.gz"
        with tarfile.open(foreign_gz, "w:gz") as tar:
            tar.add(REPO / "README.md", "README.md")
        not_tar = tmp_path / "notes.gz"
        not_tar.write_bytes(gzip.compress(b"hello"))

        before = file_tree(target)
        for archive, code, words in (
            (flipped, 1, "damaged"), (truncated, 1, "damaged"), (tampered, 1, "postgres.dump: its sha256 differs"),
            (newer, 2, "format version 2"), (foreign_tar, 2, "not an appliance backup"),
            (foreign_gz, 2, "not an appliance backup"), (not_tar, 1, "damaged"),
            (tmp_path / "missing.tar.gz", 2, "cannot be read"),
        ):
            done = cli(target_env, "restore", str(archive))
            assert done.returncode == code, f"{archive.name}: {done.returncode} {done.stderr}"
            assert words in done.stderr, f"{archive.name}: {done.stderr}"
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert file_tree(target) == before, f"{archive.name} changed the target home"

        done = cli(target_env, "restore", str(good))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "kept in" in done.stdout and list(target.glob("postgres.before-restore-*"))
    finally:
        shutil.rmtree(source.parent, ignore_errors=True)
        shutil.rmtree(target.parent, ignore_errors=True)


def test_an_external_database_is_restored_over_its_objects_in_one_transaction(tmp_path, postgres_server):
    """``DATABASE_URL`` with its password in it (which reaches pg_dump and pg_restore in ``PGPASSWORD``, and
    the manifest nowhere): the target database, migrated and holding other rows, ends with the source's."""
    password = (postgres_server.dir / "password").read_text().strip()

    def database(rows: list[str]) -> tuple[str, str]:
        url = postgres_server.create_database("bk")
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            for name in rows:
                conn.execute("INSERT INTO tenants (name) VALUES (%s)", (name,))
        name = url.split("///", 1)[1].split("?", 1)[0]
        return f"postgresql://appliance:{password}@127.0.0.1:{postgres_server.port}/{name}", url

    source, source_local = database(["Acme", "Globex"])
    target, target_local = database(["Initech"])
    env = {**base_env(tmp_path / "home"), "REDIS_URL": "redis://127.0.0.1:1/0"}
    made = cli({**env, "DATABASE_URL": source}, "backup", "--output", str(tmp_path))
    assert made.returncode == 0, made.stderr
    with tarfile.open(made.stdout.splitlines()[-1]) as tar:
        manifest = tar.extractfile("manifest.json").read().decode()
    assert password not in manifest and '"database": "external"' in manifest
    restored = cli({**env, "DATABASE_URL": target}, "restore", made.stdout.splitlines()[-1])
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert contents(target_local) == contents(source_local)


def test_backup_refuses_to_replace_a_file_and_fails_while_the_storage_stays_busy(tmp_path, keep_umask):
    home, env = _home_with_database()
    try:
        existing = tmp_path / "kept.tar.gz"
        existing.write_bytes(b"an older archive")
        for output, words in ((existing, "exists"), (tmp_path / "missing" / "a.tar.gz", "is not a directory")):
            done = cli(env, "backup", "--output", str(output))
            assert done.returncode == 2 and words in done.stderr, done.stderr
        assert existing.read_bytes() == b"an older archive"

        storage = StorageLock(home / "qdrant-edge")
        assert storage.try_acquire()  # an indexer run that does not end
        try:
            done = cli(env, "backup", "--output", str(tmp_path), "--wait", "0.5")
        finally:
            storage.release()
        assert done.returncode == 1 and f"in use by pid {os.getpid()}" in done.stderr, done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.tar.gz"], "nothing is left behind"
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)


def test_a_bundled_qdrant_server_is_started_for_a_backup_and_a_restore_while_the_appliance_is_stopped(tmp_path,
                                                                                                   keep_umask):
    """The image's default: a bundled Qdrant server, supervised, so stopped with the appliance. The bundled
    binary here is ``tests/packs/knowledge/qdrant_server.py`` run as a program (no Qdrant server binary exists here):
    it speaks the snapshot API over collections kept as files in its storage."""
    source, _ = _home_with_database()
    target = appliance_home()
    try:
        storage = source / "qdrant-server" / "storage"
        storage.mkdir(parents=True)
        content = b"the bundled server's collection " * 30_000
        (storage / f"{COLLECTION}.blob").write_bytes(content)

        def env(home: Path) -> dict[str, str]:
            return base_env(home, QDRANT_BIN=str(BUNDLED_STANDIN), QDRANT_URL=f"http://127.0.0.1:{free_port()}",
                            QDRANT_API_KEY="bundled-test-key-0123456789")

        made = cli(env(source), "backup", "--output", str(tmp_path))
        assert made.returncode == 0, made.stderr
        assert "qdrant server" in made.stdout and "collection.snapshot" in made.stdout
        restored = cli(env(target), "restore", made.stdout.splitlines()[-1])
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert (target / "qdrant-server" / "storage" / f"{COLLECTION}.blob").read_bytes() == content
        assert processes_of(source) == processes_of(target) == [], "what the commands started is stopped"
    finally:
        shutil.rmtree(source.parent, ignore_errors=True)
        shutil.rmtree(target.parent, ignore_errors=True)
