"""The knowledge pack's part of ``appliance backup``: its Qdrant collection, consistent with PostgreSQL.

The indexer writes a document's points into Qdrant first and records the indexed version in PostgreSQL after,
both inside one run that holds the store (in embedded mode: the storage's file lock, for the whole run). So
the archive is consistent when the database snapshot is taken while no indexer run is under way and the
store is copied before the next one begins:

- Embedded (Qdrant Edge, ``$APPLIANCE_HOME/qdrant-edge``): take the storage's file lock (waiting for an
  indexer run to end), take the database snapshot, copy the storage (sparse), drop the lock. An indexer run
  that starts meanwhile waits ``QDRANT_LOCAL_WAIT`` for the lock; a longer copy makes it fail and be retried.
  The copy is then opened once to count its points, which also proves it loads.
- Qdrant server (``QDRANT_URL``): take the database snapshot, then a snapshot of the collection through the
  server's snapshot API (``appliance.packs.knowledge.server_snapshot``). Nothing holds the indexer off, so a
  document re-indexed in between may be found in the collection with its newer text; the indexer's own
  consistency (points are written before their rows) keeps every row the snapshot calls indexed in it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.packs.knowledge import server_snapshot
from appliance.packs.knowledge.edge_store import META_FILE, SHARD_DIR
from appliance.packs.knowledge.storage_lock import LOCK_FILE, StorageLock
from appliance.packs.knowledge.store import embedded_root, server_mode
from appliance.sdk import BackupRefused, write_sparse

#: The embedded storage's directory in the part.
EDGE_DIR = "qdrant-edge"


class KnowledgeBackup:
    """``appliance.kernel.contract.backup.BackupPart`` for the knowledge collection."""

    def save(self, config: Config, directory: Path, consistent_point: Callable[[], None],
             wait: float) -> dict[str, Any]:
        if server_mode(config):
            return server_snapshot.save(config, directory, consistent_point)
        root = embedded_root(config)
        if not root.is_dir():
            consistent_point()
            return {"qdrant": "embedded", "collections": {}}
        lock = StorageLock(root)
        lock.acquire(wait)
        try:
            consistent_point()
            copy_tree(root, directory / EDGE_DIR)
        finally:
            lock.release()
        return {"qdrant": "embedded", "engine": f"qdrant-edge {version('qdrant-edge-py')}",
                "collections": count_points(directory / EDGE_DIR)}

    def check(self, config: Config, info: dict[str, Any]) -> None:
        archived = info.get("qdrant")
        here = "server" if server_mode(config) else "embedded"
        if archived != here:
            raise BackupRefused(
                f"the archive holds the knowledge collection of a {archived} Qdrant, but this appliance uses "
                f"{'the Qdrant server at QDRANT_URL' if here == 'server' else 'the embedded Qdrant (no QDRANT_URL)'}"
                f": restore with the Qdrant setting of the appliance that made it, then change it and run "
                f"`appliance knowledge reindex`")
        if here == "server":
            server_snapshot.check(config, info)
            return
        holder = StorageLock(embedded_root(config)).held_by()
        if holder is not None:
            raise BackupRefused(f"the embedded Qdrant storage is in use by {holder}: stop it first")

    def restore(self, config: Config, directory: Path, info: dict[str, Any], aside: str) -> list[str]:
        if server_mode(config):
            return server_snapshot.restore(config, directory, info)
        root = embedded_root(config)
        said = []
        if root.exists():
            kept = root.with_name(f"{root.name}.{aside}")
            os.rename(root, kept)
            said.append(f"knowledge: the embedded Qdrant storage there before is kept in {kept}")
        staged = directory / EDGE_DIR
        if staged.is_dir():
            os.rename(staged, root)
            root.chmod(0o700)
        points = sum(c.get("points", 0) for c in info.get("collections", {}).values())
        said.append(f"knowledge: embedded Qdrant storage restored ({len(info.get('collections', {}))} "
                    f"collection(s), {points} points)")
        return said


def copy_tree(source: Path, target: Path) -> None:
    """``source`` copied to the new directory ``target``, holes kept, without the storage's lock file."""
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        into = target / here.relative_to(source)
        into.mkdir(mode=0o700)
        dirs.sort()
        for name in sorted(files):
            path = here / name
            if here == source and name == LOCK_FILE:
                continue
            if path.is_symlink() or not path.is_file():
                raise BackupRefused(f"{path}: not a regular file; the embedded Qdrant storage has none of those")
            with open(path, "rb") as src:
                write_sparse(src, into / name, os.fstat(src.fileno()).st_size)


def count_points(storage: Path) -> dict[str, dict[str, Any]]:
    """Each complete collection of a copied storage with its points counted (opening the copy proves it
    loads; Qdrant Edge replays what its write-ahead log holds into the copy, never into the original)."""
    from qdrant_edge import CountRequest, EdgeShard

    found: dict[str, dict[str, Any]] = {}
    for meta in sorted(storage.glob(f"*/{META_FILE}")):
        shard = EdgeShard.load(str(meta.parent / SHARD_DIR))
        try:
            found[meta.parent.name] = {"points": shard.count(CountRequest(exact=True))}
        finally:
            shard.close()
    for leftover in storage.glob("*/"):
        # A collection whose creation was cut short (no metadata yet): the store makes it again anyway.
        if leftover.name not in found:
            shutil.rmtree(leftover)
    return found


PART = KnowledgeBackup()
