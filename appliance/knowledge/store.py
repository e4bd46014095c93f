"""The knowledge collection, whichever Qdrant holds it: what a store offers, and which one to open.

- Server mode (``QDRANT_URL`` set: the supervised Qdrant binary, or any Qdrant server):
  ``appliance.knowledge.server_store`` on qdrant-client, gRPC when ``QDRANT_PREFER_GRPC`` is on. Any number
  of processes may use it.
- Embedded mode (no ``QDRANT_URL``): ``appliance.knowledge.edge_store``, a Qdrant Edge shard under
  ``$APPLIANCE_HOME/qdrant-edge``, guarded by a file lock so that one process at a time opens it (see
  ``appliance.knowledge.storage_lock``).

Both record the embedder that filled the collection and refuse, with the way out in the message, to mix in
vectors of another embedder or size (``CollectionMismatch``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

from appliance.errors import ApplianceError
from appliance.knowledge.embedder import Identity
from appliance.knowledge.storage_lock import StorageBusy

if TYPE_CHECKING:
    from appliance.config import Config

__all__ = ["CollectionMismatch", "Hit", "KnowledgePoint", "KnowledgeStore", "StorageBusy", "open_store",
           "point_id", "server_mode"]

#: Namespace of point ids: uuid5 of "document_id:chunk_index", so re-indexing overwrites the same points.
POINT_NAMESPACE = uuid.UUID("0b6f1c7e-5d2a-5b8e-9c4f-3a1d2e7b6c90")
#: Keys of the embedder record (server mode: collection metadata; embedded: the collection's JSON file).
META_KIND, META_MODEL, META_DIMENSIONS = "appliance_embedder", "appliance_model", "appliance_dimensions"
#: Payload fields with a payload index (filtered search by tenant, deletes by document).
INDEXED_FIELDS = ("tenant_id", "document_id")


class CollectionMismatch(ApplianceError):
    """The collection exists with another vector size, distance or embedder than configured."""


def point_id(document_id: int, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{chunk_index}"))


@dataclass(frozen=True)
class KnowledgePoint:
    """One chunk as stored: its id, vector and payload (``tenant_id``, ``document_id``, ``text``...)."""

    id: str
    vector: list[float]
    payload: dict[str, Any] = field(default_factory=dict)


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


class KnowledgeStore(Protocol):
    """What the indexer, the commands and the snapshot job use; ``close`` is idempotent."""

    collection: str
    mode: str

    def exists(self) -> bool: ...

    def ensure(self, identity: Identity) -> bool:
        """Create the collection if missing (True) or check that it fits ``identity`` (False); raises
        ``CollectionMismatch`` when it does not fit."""

    def check(self, identity: Identity) -> None:
        """Raise ``CollectionMismatch`` unless the existing collection fits ``identity`` (for readers)."""

    def upsert(self, points: Sequence[KnowledgePoint]) -> None:
        """Write the points; they are durable when this returns."""

    def delete(self, ids: Sequence[str]) -> None: ...

    def count(self, tenant_id: int | None = None) -> int: ...

    def search(self, vector: list[float], tenant_id: int | None, limit: int) -> list[Hit]:
        """The ``limit`` best documents of ``tenant_id`` (all tenants when None), best chunk of each."""

    def points(self) -> list[KnowledgePoint]:
        """Every point with its payload (vectors left out): for checks and tests, not for large collections."""

    def close(self) -> None: ...

    def __enter__(self) -> "KnowledgeStore": ...

    def __exit__(self, *exc: object) -> None: ...


def metadata(identity: Identity) -> dict[str, Any]:
    return {META_KIND: identity.kind, META_MODEL: identity.model, META_DIMENSIONS: identity.dimensions}


def recorded_identity(meta: dict[str, Any]) -> Identity | None:
    """The embedder a collection records, or None when it records none (created by hand)."""
    if META_MODEL not in meta:
        return None
    return Identity(str(meta.get(META_KIND)), str(meta.get(META_MODEL)), int(meta.get(META_DIMENSIONS, 0)))


def mismatch(collection: str, found: str, wanted: Identity) -> CollectionMismatch:
    return CollectionMismatch(
        f"Qdrant collection {collection!r} holds {found}, but this appliance embeds with {wanted.describe()}; "
        f"vectors of different embedders cannot be mixed. Reindex into a new collection: set QDRANT_COLLECTION "
        f"to a new name and the indexer creates it and embeds every document again (or restore the embedding "
        f"settings that filled {collection!r}).")


def best_per_document(scored: Iterable[tuple[float, dict[str, Any]]], limit: int) -> list[Hit]:
    """(score, payload) pairs, best first, to the best chunk of each of the ``limit`` best documents."""
    hits: dict[int, Hit] = {}
    for score, payload in scored:
        document = int(payload["document_id"])
        if document in hits:
            continue
        hits[document] = Hit(score=float(score), document_id=document, tenant_id=int(payload["tenant_id"]),
                             title=payload.get("title", ""), source=payload.get("source"),
                             chunk_index=int(payload.get("chunk_index", 0)), text=payload.get("text", ""),
                             updated_at=payload.get("updated_at"))
        if len(hits) == limit:
            break
    return list(hits.values())


def server_mode(config: "Config") -> bool:
    return config.core.qdrant_url_set


def open_store(config: "Config", wait: float | None = None) -> KnowledgeStore:
    """A store on the configured Qdrant; the caller closes it.

    Embedded mode waits up to ``wait`` seconds (default ``QDRANT_LOCAL_WAIT``) for another process to close
    the storage, then raises ``StorageBusy`` naming the process that holds it.
    """
    if server_mode(config):
        from appliance.knowledge.server_store import open_server_store

        return open_server_store(config)
    from appliance.knowledge.edge_store import open_edge_store

    return open_edge_store(config, config.knowledge.storage_wait if wait is None else wait)
