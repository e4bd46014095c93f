"""The Qdrant collection of knowledge chunks: opening Qdrant, checking the collection, writing and searching.

Server mode (``QDRANT_URL`` set: the Qdrant binary of the image, or any Qdrant server) uses gRPC when
``QDRANT_PREFER_GRPC`` is on. Otherwise qdrant-client's embedded local mode keeps the collection under
``$APPLIANCE_HOME/qdrant``. That storage admits one open client at a time, per storage directory, across
all processes and within one (a file lock that a second client of the same process cannot take either). So
a process keeps one shared client per directory, counted by its users and serialised by a lock (local mode
is not safe for concurrent writers), and closes it when its last user is done, which lets the CLI open the
storage between two indexer runs of the worker (see ``open_store``).

A collection records the embedder that filled it in its metadata; ``ensure`` refuses a collection whose
vector size, distance or embedder differ from the configured ones, with the way out in the message.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from qdrant_client import QdrantClient, models

from appliance.errors import ApplianceError
from appliance.knowledge.embedder import Identity

if TYPE_CHECKING:
    from appliance.config import Config

#: Namespace of point ids: uuid5 of "document_id:chunk_index", so re-indexing overwrites the same points.
POINT_NAMESPACE = uuid.UUID("0b6f1c7e-5d2a-5b8e-9c4f-3a1d2e7b6c90")
META_KIND, META_MODEL, META_DIMENSIONS = "appliance_embedder", "appliance_model", "appliance_dimensions"
#: Payload fields with a payload index in server mode (filtered search by tenant, deletes by document).
INDEXED_FIELDS = ("tenant_id", "document_id")
_BUSY_POLL = 0.2


class CollectionMismatch(ApplianceError):
    """The collection exists with another vector size, distance or embedder than configured."""


class StorageBusy(ApplianceError):
    """Embedded mode: another process (the worker's indexer run) has the local storage open."""


def point_id(document_id: int, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{chunk_index}"))


@dataclass(frozen=True)
class Hit:
    """The best-matching chunk of one document."""

    score: float
    document_id: int
    tenant_id: int
    title: str
    source: str | None
    chunk_index: int
    text: str
    updated_at: str | None


class KnowledgeStore:
    """The collection on one Qdrant client. Every operation holds ``guard`` (the shared local client's lock in
    embedded mode, nothing in server mode); ``close`` hands the client back (idempotent)."""

    def __init__(self, client: QdrantClient, collection: str, server: bool, upsert_batch: int = 256,
                 guard: AbstractContextManager | None = None, release: Callable[[], None] | None = None):
        self.client = client
        self.collection = collection
        self.server = server
        self.upsert_batch = upsert_batch
        self._guard = guard if guard is not None else nullcontext()
        self._release = release or client.close
        self._closed = False

    @property
    def mode(self) -> str:
        return "server" if self.server else "embedded"

    def exists(self) -> bool:
        with self._guard:
            return self.client.collection_exists(self.collection)

    def ensure(self, identity: Identity) -> bool:
        """Create the collection if it is missing (True) or check that it fits ``identity`` (False).

        Raises ``CollectionMismatch`` when it does not fit. An empty collection that records no embedder
        (created by hand) is adopted; a filled one is refused.
        """
        with self._guard:
            return self._ensure(identity)

    def _ensure(self, identity: Identity) -> bool:
        if not self.exists():
            self.client.create_collection(
                self.collection, vectors_config=models.VectorParams(size=identity.dimensions,
                                                                    distance=models.Distance.COSINE),
                metadata=_metadata(identity),
            )
            self._index_payload(set())
            return True
        info = self.client.get_collection(self.collection)
        self._check(info, identity)
        self._index_payload(set(info.payload_schema or {}))
        return False

    def check(self, identity: Identity) -> None:
        """Raise ``CollectionMismatch`` unless the existing collection fits ``identity`` (for readers)."""
        with self._guard:
            self._check(self.client.get_collection(self.collection), identity, adopt=False)

    def _check(self, info: models.CollectionInfo, identity: Identity, adopt: bool = True) -> None:
        vectors = info.config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise CollectionMismatch(self._mismatch("named vectors", identity.describe()))
        if vectors.size != identity.dimensions or vectors.distance != models.Distance.COSINE:
            raise CollectionMismatch(self._mismatch(f"vectors of size {vectors.size} ({vectors.distance.value})",
                                                    identity.describe()))
        meta = info.config.metadata or {}
        if META_MODEL not in meta:
            if info.points_count:
                raise CollectionMismatch(self._mismatch(f"{info.points_count} points from an unknown embedder",
                                                        identity.describe()))
            if adopt:
                self.client.update_collection(self.collection, metadata=_metadata(identity))
            return
        recorded = Identity(str(meta.get(META_KIND)), str(meta.get(META_MODEL)), int(meta.get(META_DIMENSIONS, 0)))
        if recorded != identity:
            raise CollectionMismatch(self._mismatch(f"vectors from {recorded.describe()}", identity.describe()))

    def _mismatch(self, found: str, wanted: str) -> str:
        return (f"Qdrant collection {self.collection!r} holds {found}, but this appliance embeds with {wanted}; "
                f"vectors of different embedders cannot be mixed. Reindex into a new collection: set "
                f"QDRANT_COLLECTION to a new name and the indexer creates it and embeds every document again "
                f"(or restore the embedding settings that filled {self.collection!r}).")

    def _index_payload(self, present: set[str]) -> None:
        # Local mode ignores payload indexes (it scans), and warns when asked for one.
        if not self.server:
            return
        for field in INDEXED_FIELDS:
            if field not in present:
                self.client.create_payload_index(self.collection, field, models.PayloadSchemaType.INTEGER, wait=True)

    def upsert(self, points: Sequence[models.PointStruct]) -> None:
        for start in range(0, len(points), self.upsert_batch):
            with self._guard:
                self.client.upsert(self.collection, points=list(points[start:start + self.upsert_batch]), wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), self.upsert_batch):
            selector = models.PointIdsList(points=list(ids[start:start + self.upsert_batch]))
            with self._guard:
                self.client.delete(self.collection, points_selector=selector, wait=True)

    def count(self, tenant_id: int | None = None) -> int:
        with self._guard:
            return self.client.count(self.collection, count_filter=_tenant_filter(tenant_id), exact=True).count

    def search(self, vector: list[float], tenant_id: int | None, limit: int) -> list[Hit]:
        """The ``limit`` best documents of ``tenant_id`` (all tenants when None), best chunk of each."""
        with self._guard:
            result = self.client.query_points_groups(
                self.collection, group_by="document_id", query=vector, query_filter=_tenant_filter(tenant_id),
                limit=limit, group_size=1, with_payload=True,
            )
        hits = []
        for group in result.groups:
            point = group.hits[0]
            payload: dict[str, Any] = point.payload or {}
            hits.append(Hit(score=float(point.score), document_id=int(payload["document_id"]),
                            tenant_id=int(payload["tenant_id"]), title=payload.get("title", ""),
                            source=payload.get("source"), chunk_index=int(payload.get("chunk_index", 0)),
                            text=payload.get("text", ""), updated_at=payload.get("updated_at")))
        return hits

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> "KnowledgeStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _metadata(identity: Identity) -> dict[str, Any]:
    return {META_KIND: identity.kind, META_MODEL: identity.model, META_DIMENSIONS: identity.dimensions}


def _tenant_filter(tenant_id: int | None) -> models.Filter | None:
    if tenant_id is None:
        return None
    return models.Filter(must=[models.FieldCondition(key="tenant_id", match=models.MatchValue(value=tenant_id))])


def server_mode(config: "Config") -> bool:
    return config.core.qdrant_url_set


def open_store(config: "Config", wait: float | None = None) -> KnowledgeStore:
    """A store on the configured Qdrant; the caller closes it.

    Embedded mode shares one client per storage directory among the stores open in this process, and
    waits up to ``wait`` seconds (default ``QDRANT_LOCAL_WAIT``) for another process to close
    the local storage, then raises ``StorageBusy`` saying what to do.
    """
    k = config.knowledge
    if server_mode(config):
        # No version check: qdrant-client runs it in a background thread at construction and only warns,
        # spuriously whenever the server is still starting (the worker waits for its /readyz instead).
        client = QdrantClient(url=config.core.qdrant_url, api_key=config.core.qdrant_api_key or None,
                              prefer_grpc=k.qdrant_prefer_grpc, grpc_port=k.qdrant_grpc_port,
                              timeout=max(1, round(k.qdrant_timeout)), check_compatibility=False)
        return KnowledgeStore(client, k.collection, server=True, upsert_batch=k.upsert_batch_size)
    path = config.core.qdrant_path.resolve()
    shared = _acquire_local(path, k.storage_wait if wait is None else wait)
    return KnowledgeStore(shared.client, k.collection, server=False, upsert_batch=k.upsert_batch_size,
                          guard=shared.lock, release=lambda: _release_local(path))


@dataclass
class _Shared:
    """This process's one client on one local storage directory, and how many open stores use it."""

    client: QdrantClient
    users: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


_LOCAL: dict[Path, _Shared] = {}
_LOCAL_LOCK = threading.Lock()


def _acquire_local(path: Path, wait: float) -> _Shared:
    """The shared client on ``path``, opened if this process has none (waiting up to ``wait`` seconds for
    another process to close the storage)."""
    with _LOCAL_LOCK:
        shared = _LOCAL.get(path)
        if shared is None:
            shared = _LOCAL[path] = _Shared(_open_waiting(path, wait))
        shared.users += 1
        return shared


def _release_local(path: Path) -> None:
    """One user fewer; the last one closes the client, unlocking the storage for other processes."""
    with _LOCAL_LOCK:
        shared = _LOCAL[path]
        shared.users -= 1
        if shared.users == 0:
            del _LOCAL[path]
            with shared.lock:
                shared.client.close()


def _open_waiting(path: Path, wait: float) -> QdrantClient:
    path.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        client, error = _open_local(path)
        if client is not None:
            return client
        if "already accessed" not in error:
            raise ApplianceError(f"cannot open Qdrant's local storage {path}: {error}")
        if time.monotonic() >= deadline:
            raise StorageBusy(
                f"Qdrant's local storage {path} is in use by another process (an indexer run of the worker, "
                f"or another command); try again in a moment, or run a Qdrant server and set QDRANT_URL so "
                f"that several processes can use it at once")
        time.sleep(_BUSY_POLL)


def _open_local(path: Path) -> tuple[QdrantClient | None, str]:
    """A local-mode client, or None and the reason it could not be opened."""
    # When the storage is locked, qdrant-client raises from its constructor and leaves its lock file open;
    # that file is closed when the half-built client is collected, which must not surface as a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return QdrantClient(path=str(path)), ""
        except RuntimeError as exc:
            error = str(exc)
        gc.collect()
    return None, error
