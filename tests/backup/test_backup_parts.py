"""The pieces of ``appliance backup`` and ``restore`` that need no service: sparse copies, member names, the
nesting that takes the database snapshot while every pack's store is quiet, stale pid files, the storage
lock probed without a write, and which Qdrant a shell's backup takes."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest

from appliance.backup.create import _save_parts
from appliance.backup.home import live_pid
from appliance.backup.manifest import ArchiveDamaged, ArchiveRefused, parse, valid_name
from appliance.commands.backup import _as_programs_see_it
from appliance.kernel.contract.backup import BLOCK, write_sparse
from appliance.kernel.contract.packs import load_settings
from appliance.packs.knowledge.storage_lock import LOCK_FILE, StorageLock
from tests.appliance.harness import STANDIN_QDRANT
from tests.services import wait_until


def test_zeros_become_holes_and_the_content_is_the_same(tmp_path):
    data = bytes(3 * BLOCK) + b"qdrant" + bytes(40 * BLOCK + 7)
    seen = hashlib.sha256()
    write_sparse(io.BytesIO(data), tmp_path / "copy", len(data), on_block=seen.update)
    copy = tmp_path / "copy"
    assert copy.read_bytes() == data and seen.hexdigest() == hashlib.sha256(data).hexdigest()
    assert copy.stat().st_blocks * 512 <= 2 * BLOCK, "only the block with data takes disk space"
    assert copy.stat().st_mode & 0o777 == 0o600


def test_a_short_source_is_an_error_and_an_existing_file_is_never_replaced(tmp_path):
    with pytest.raises(EOFError):
        write_sparse(io.BytesIO(b"abc"), tmp_path / "short", 10)
    (tmp_path / "there").write_text("kept")
    with pytest.raises(FileExistsError):
        write_sparse(io.BytesIO(b"abc"), tmp_path / "there", 3)
    assert (tmp_path / "there").read_text() == "kept"


@pytest.mark.parametrize(("name", "ok"), [
    ("postgres.dump", True), ("knowledge/qdrant-edge/c/shard/wal/open-1", True), ("manifest.json", False),
    ("/etc/passwd", False), ("../outside", False), ("a/../../b", False), ("a//b", False), ("./a", False),
    ("a\\b", False), ("", False),
])
def test_member_names_stay_inside(name, ok):
    assert valid_name(name) is ok


def test_a_manifest_is_ours_and_not_too_new_before_it_is_read():
    with pytest.raises(ArchiveRefused, match="not an appliance backup"):
        parse(b'{"format": "something-else"}')
    with pytest.raises(ArchiveRefused, match="format version 9"):
        parse(b'{"format": "appliance-backup", "format_version": 9}')
    with pytest.raises(ArchiveDamaged, match="member name"):
        parse(b'{"format": "appliance-backup", "format_version": 1, "members": {"../x": {}}}')


class Recording:
    """A part that records when it holds its store, copies and lets go."""

    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log

    def save(self, config, directory: Path, consistent_point, wait: float) -> dict:
        self.log.append(f"{self.name} holds")
        consistent_point()
        (directory / "data").write_text(self.name)
        self.log.append(f"{self.name} copied, lets go")
        return {"wait": wait}


def test_the_snapshot_is_taken_while_every_part_holds_its_store(tmp_path):
    log: list[str] = []
    parts = [("a", Recording("a", log)), ("b", Recording("b", log))]
    infos = _save_parts(None, tmp_path, parts, lambda: log.append("snapshot"), 5.0)
    assert log == ["a holds", "b holds", "snapshot", "b copied, lets go", "a copied, lets go"]
    assert infos == {"a": {"wait": 5.0}, "b": {"wait": 5.0}}
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_a_stale_pid_file_is_not_a_running_program(tmp_path):
    """A pid file left by a killed container names a pid the next one reuses: this very command (often pid 1),
    or another program."""
    pid_file = tmp_path / "supervisord.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert live_pid(pid_file, "supervis") is None
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            # Between fork and exec the child's command line is still this one's.
            wait_until(lambda: b"sleep" in Path(f"/proc/{other.pid}/cmdline").read_bytes(), 5, "sleep's exec")
            pid_file.write_text(f"{other.pid}\n")
            assert live_pid(pid_file, "supervis") is None
            assert live_pid(pid_file, "sleep") == other.pid
        finally:
            other.kill()
    assert live_pid(pid_file, "sleep") is None, "a dead pid"
    assert live_pid(tmp_path / "missing.pid", "sleep") is None


def test_who_holds_the_storage_is_told_without_writing_anything(tmp_path):
    storage = tmp_path / "qdrant-edge"
    assert StorageLock(storage).held_by() is None and not storage.exists(), "an absent storage is not created"
    holder = StorageLock(storage)
    holder.try_acquire()
    try:
        written = (storage / LOCK_FILE).read_bytes()
        found = StorageLock(storage).held_by()
        assert found is not None and f"pid {os.getpid()} " in found
        assert (storage / LOCK_FILE).read_bytes() == written
    finally:
        holder.release()
    assert StorageLock(storage).held_by() is None


def test_with_a_bundled_qdrant_server_the_backup_uses_it_as_the_programs_do():
    """``docker exec CTR appliance backup`` has no ``QDRANT_URL`` when ``appliance run`` chose the bundled
    server: the backup must take the server's collection, not an embedded storage that is not in use."""
    bundled = load_settings({"APPLIANCE_HOME": "/tmp/none", "QDRANT_BIN": str(STANDIN_QDRANT)}, env_file=None)
    seen, plan = _as_programs_see_it(bundled)
    assert seen.core.qdrant_url_set and seen.core.qdrant_url == "http://127.0.0.1:6333" and plan.qdrant == "server"
    embedded = load_settings({"APPLIANCE_HOME": "/tmp/none"}, env_file=None)
    assert _as_programs_see_it(embedded)[0] is embedded
