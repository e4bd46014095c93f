"""The knowledge collection embedded in the process: a Qdrant Edge shard (qdrant-edge-py) per collection.

Layout under ``$APPLIANCE_HOME/qdrant-edge``: ``.lock`` (see ``appliance.packs.knowledge.storage_lock``) and, per
collection, ``<collection>/shard`` (the shard) and ``<collection>/collection.json`` (vector size, distance
and the embedder that fills it). ``collection.json`` is written last, once the shard is complete, so a
directory without it is a creation cut short, removed and made again.

One process at a time: the first store a process opens takes the file lock and the last one it closes
flushes every shard and releases it. Stores of one process share the shards, serialised by one lock. Writes
are flushed before ``upsert``/``delete`` return, so the indexer's commit in PostgreSQL never gets ahead of
what the shard keeps, and a crash replays at most one call's write-ahead log.

Qdrant Edge maps its files into memory, and a full disk turns a write into a SIGBUS: nothing is written while
the disk is full (``refuse_on_full_disk``).

Edge has no group-by: a search fetches a few chunks per wanted document and keeps the best of each,
fetching more when chunks of the same documents crowd the first page.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    MatchValue,
    PayloadSchemaType,
    Point,
    Query,
    QueryRequest,
    ScrollRequest,
    UpdateOperation,
)

from appliance.packs.knowledge.embedder import Identity
from appliance.packs.knowledge.legacy_local import migrate_collection
from appliance.packs.knowledge.points import (
    INDEXED_FIELDS,
    Hit,
    KnowledgePoint,
    best_per_document,
    metadata,
    mismatch,
    recorded_identity,
)
from appliance.packs.knowledge.storage_lock import StorageLock
from appliance.sdk import FULL_BELOW, SYSTEM, ApplianceError, iso, size_text, write_atomic
from appliance.sdk import measure_disk as measure

log = logging.getLogger("appliance.knowledge")

META_FILE = "collection.json"
SHARD_DIR = "shard"
#: Chunks fetched per wanted document on a search's first try (documents have a few chunks each).
FETCH_FACTOR = 4
#: Most chunks one search ever fetches.
FETCH_CAP = 4096


@dataclass
class _Shared:
    """This process's hold on one storage directory: the file lock, the open shards and their users."""

    lock: StorageLock
    users: int = 0
    guard: threading.RLock = field(default_factory=threading.RLock)
    shards: dict[str, EdgeShard] = field(default_factory=dict)

    def shard(self, directory: Path) -> EdgeShard:
        key = str(directory)
        if key not in self.shards:
            refuse_on_full_disk(directory, "opens")  # loading replays (and writes) its write-ahead log
            try:
                self.shards[key] = EdgeShard.load(key)
            except Exception as exc:  # noqa: BLE001 - qdrant-edge raises plain Exception
                raise ApplianceError(f"cannot open the embedded Qdrant shard {directory}: {exc}") from None
        return self.shards[key]

    def forget(self, directory: Path) -> None:
        shard = self.shards.pop(str(directory), None)
        if shard is not None:
            shard.close()

    def close_all(self) -> None:
        for key in list(self.shards):
            shard = self.shards.pop(key)
            shard.flush()
            shard.close()


_SHARED: dict[Path, _Shared] = {}
_SHARED_LOCK = threading.Lock()


class EdgeStore:
    """One collection in the embedded storage; every operation holds the process's shared guard."""

    mode = "embedded"

    def __init__(self, shared: _Shared, root: Path, collection: str, legacy: Path, upsert_batch: int = 256):
        self._shared = shared
        self.root = root
        self.collection = collection
        self.directory = root / collection
        self.legacy = legacy
        self.upsert_batch = upsert_batch
        self._closed = False

    @property
    def _meta_path(self) -> Path:
        return self.directory / META_FILE

    @property
    def _shard_path(self) -> Path:
        return self.directory / SHARD_DIR

    def exists(self) -> bool:
        return self._meta_path.is_file()

    def _meta(self) -> dict[str, Any]:
        return json.loads(self._meta_path.read_text())

    def ensure(self, identity: Identity) -> bool:
        """Create the collection (filled from qdrant-client's local storage of earlier releases when that
        holds it) or check it. True when it was created empty, so every document must be indexed again."""
        with self._shared.guard:
            if self.exists():
                self._check(identity)
                return False
            return not self._create(identity)

    def _create(self, identity: Identity) -> bool:
        """Make the shard, migrate the legacy points when there are any; True when points were migrated."""
        refuse_on_full_disk(self.root, "creates")
        self._shared.forget(self._shard_path)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        config = EdgeConfig(vectors=EdgeVectorParams(size=identity.dimensions, distance=Distance.Cosine))
        EdgeShard.create(str(self._shard_path), config).close()
        shard = self._shared.shard(self._shard_path)
        for name in INDEXED_FIELDS:
            shard.update(UpdateOperation.create_field_index(name, PayloadSchemaType.Integer))
        migrated = migrate_collection(self.legacy, self.collection, identity, self._write)
        shard.flush()
        meta = {**metadata(identity), "size": identity.dimensions, "distance": "Cosine", "created": iso(SYSTEM.now())}
        if migrated:
            meta["migrated_from"] = str(self.legacy)
        write_atomic(self._meta_path, json.dumps(meta, indent=2))
        return migrated > 0

    def check(self, identity: Identity) -> None:
        with self._shared.guard:
            self._check(identity)

    def _check(self, identity: Identity) -> None:
        meta = self._meta()
        if meta.get("size") != identity.dimensions:
            raise mismatch(self.collection, f"vectors of size {meta.get('size')} ({meta.get('distance')})", identity)
        recorded = recorded_identity(meta)
        if recorded != identity:
            found = recorded.describe() if recorded else "an unknown embedder"
            raise mismatch(self.collection, f"vectors from {found}", identity)

    def upsert(self, points: Sequence[KnowledgePoint]) -> None:
        with self._shared.guard:
            refuse_on_full_disk(self.root, "writes")
            self._write(points)
            self._shard().flush()

    def _write(self, points: Sequence[KnowledgePoint]) -> None:
        shard = self._shard()
        for start in range(0, len(points), self.upsert_batch):
            batch = [Point(p.id, p.vector, p.payload) for p in points[start:start + self.upsert_batch]]
            shard.update(UpdateOperation.upsert_points(batch))

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._shared.guard:
            refuse_on_full_disk(self.root, "writes")
            shard = self._shard()
            for start in range(0, len(ids), self.upsert_batch):
                shard.update(UpdateOperation.delete_points(list(ids[start:start + self.upsert_batch])))
            shard.flush()

    def count(self, tenant_id: int | None = None) -> int:
        with self._shared.guard:
            return self._shard().count(CountRequest(exact=True, filter=_tenant_filter(tenant_id)))

    def search(self, vector: list[float], tenant_id: int | None, limit: int) -> list[Hit]:
        fetch = limit * FETCH_FACTOR
        with self._shared.guard:
            shard = self._shard()
            while True:
                found = shard.query(QueryRequest(limit=fetch, query=Query.Nearest(vector), with_payload=True,
                                                 filter=_tenant_filter(tenant_id)))
                hits = best_per_document(((p.score, p.payload or {}) for p in found), limit)
                if len(hits) >= limit or len(found) < fetch or fetch >= FETCH_CAP:
                    return hits
                fetch = min(fetch * FETCH_FACTOR, FETCH_CAP)

    def points(self) -> list[KnowledgePoint]:
        found: list[KnowledgePoint] = []
        offset = None
        with self._shared.guard:
            shard = self._shard()
            while True:
                records, offset = shard.scroll(ScrollRequest(offset=offset, limit=1000, with_payload=True))
                found += [KnowledgePoint(str(r.id), [], dict(r.payload or {})) for r in records]
                if offset is None:
                    return found

    def _shard(self) -> EdgeShard:
        if not self.exists() and not self._shard_path.is_dir():
            raise ApplianceError(f"the embedded collection {self.collection!r} does not exist yet")
        return self._shared.shard(self._shard_path)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self.root)

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refuse_on_full_disk(directory: Path, doing: str) -> None:
    """Qdrant Edge writes through memory maps: on a full disk, a write into a page the filesystem cannot give is
    no error but a SIGBUS that kills the whole process (the worker, with every run in it). So the store writes
    nothing, and opens no shard, while the disk is full (``appliance.kernel.runtime.disk``): the run fails with this
    error instead, and the indexer runs again later. A directory that cannot be looked at is left to Qdrant."""
    try:
        space = measure(directory)
    except OSError:
        return
    if space.full:
        inodes = "" if space.free_inodes is None else f", {space.free_inodes} inodes"
        raise ApplianceError(
            f"the embedded Qdrant {doing} nothing while APPLIANCE_HOME's filesystem is full "
            f"({size_text(space.free_bytes)} free{inodes}; it needs {size_text(FULL_BELOW)}): "
            f"its files are memory-mapped, and a write the disk cannot hold would kill the worker. Free space "
            f"there; the indexer runs again by itself")


def _tenant_filter(tenant_id: int | None) -> Filter | None:
    if tenant_id is None:
        return None
    return Filter(must=[FieldCondition("tenant_id", match=MatchValue(tenant_id))])


def open_edge_store(root: Path, collection: str, legacy: Path, wait: float, upsert_batch: int = 256) -> EdgeStore:
    """A store on ``collection`` in the embedded storage at ``root``, taking its file lock (waiting up to
    ``wait`` seconds) when this process does not hold it yet; ``legacy``: qdrant-client's local storage of
    earlier releases, carried over when the collection is created."""
    return EdgeStore(_acquire(root, wait), root, collection, legacy, upsert_batch=upsert_batch)


def _acquire(root: Path, wait: float) -> _Shared:
    with _SHARED_LOCK:
        shared = _SHARED.get(root)
        if shared is None:
            lock = StorageLock(root)
            lock.acquire(wait)
            shared = _SHARED[root] = _Shared(lock)
        shared.users += 1
        return shared


def _release(root: Path) -> None:
    """One user fewer; the last one flushes and closes the shards, then drops the file lock."""
    with _SHARED_LOCK:
        shared = _SHARED[root]
        shared.users -= 1
        if shared.users:
            return
        del _SHARED[root]
        with shared.guard:
            try:
                shared.close_all()
            finally:
                shared.lock.release()

