"""The knowledge collection, whichever Qdrant holds it: what a store offers, and which one to open.

- Server mode (``QDRANT_URL`` set: the supervised Qdrant binary, or any Qdrant server):
  ``appliance.packs.knowledge.server_store`` on qdrant-client, gRPC when ``QDRANT_PREFER_GRPC`` is on. Any number
  of processes may use it.
- Embedded mode (no ``QDRANT_URL``): ``appliance.packs.knowledge.edge_store``, a Qdrant Edge shard under
  ``$APPLIANCE_HOME/qdrant-edge``, guarded by a file lock so that one process at a time opens it (see
  ``appliance.packs.knowledge.storage_lock``).

Both record the embedder that filled the collection and refuse, with the way out in the message, to mix in
vectors of another embedder or size (``CollectionMismatch``). This module is the only one of them that reads
the configuration; the stores take plain values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance.packs.knowledge.embedder import Identity
from appliance.packs.knowledge.points import CollectionMismatch, Hit, KnowledgePoint, metadata, point_id
from appliance.packs.knowledge.storage_lock import StorageBusy, StorageLock

if TYPE_CHECKING:
    from appliance.config import Config

__all__ = ["CollectionMismatch", "Hit", "KnowledgePoint", "KnowledgeStore", "StorageBusy", "embedded_root",
           "embedded_state", "metadata", "open_store", "point_id", "server_mode"]

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

    def __enter__(self) -> KnowledgeStore: ...

    def __exit__(self, *exc: object) -> None: ...


def server_mode(config: Config) -> bool:
    return config.core.qdrant_url_set


def embedded_root(config: Config) -> Path:
    """Where the embedded Qdrant (Qdrant Edge) keeps its collections, under ``APPLIANCE_HOME``."""
    return config.core.qdrant_edge_path


def open_store(config: Config, wait: float | None = None) -> KnowledgeStore:
    """A store on the configured Qdrant; the caller closes it.

    Embedded mode waits up to ``wait`` seconds (default ``QDRANT_LOCAL_WAIT``) for another process to close
    the storage, then raises ``StorageBusy`` naming the process that holds it.
    """
    k = config.knowledge
    # qdrant-client takes over a second to import, Qdrant Edge a fraction: only the mode in use is imported.
    if server_mode(config):
        from appliance.packs.knowledge.server_store import ServerStore

        return ServerStore.connect(config.core.qdrant_url, config.core.qdrant_api_key, k.collection,
                                   prefer_grpc=k.qdrant_prefer_grpc, grpc_port=config.core.qdrant_grpc_port,
                                   timeout=k.qdrant_timeout, upsert_batch=k.upsert_batch_size)
    from appliance.packs.knowledge.edge_store import open_edge_store

    return open_edge_store(embedded_root(config), k.collection, config.core.qdrant_path.resolve(),
                           k.storage_wait if wait is None else wait, upsert_batch=k.upsert_batch_size)


def embedded_state(config: Config) -> dict[str, Any]:
    """Where the embedded storage is and, without waiting, either who uses it or how many points the
    collection holds (for ``appliance knowledge status``)."""
    root = embedded_root(config)
    state: dict[str, Any] = {"path": str(root)}
    if not root.is_dir():
        return {**state, "points": 0}
    try:
        with open_store(config, wait=0) as store:
            return {**state, "points": store.count() if store.exists() else 0}
    except StorageBusy:
        holder = StorageLock(root).holder()
        return {**state, "in_use_by": holder.describe() if holder else "another process"}
