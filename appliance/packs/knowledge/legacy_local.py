"""Points kept by earlier releases in qdrant-client's local mode (``$APPLIANCE_HOME/qdrant``), carried over
into the embedded Qdrant Edge collection when that is created, so that upgrading loses nothing and embeds
nothing again (embeddings cost money with OpenAI).

The point ids are the same (uuid5 of document and chunk), so PostgreSQL's record of what is indexed stays
true. When the old storage cannot be read, or holds vectors of another embedder or size, nothing is carried
over and the caller creates the collection empty: the indexer then embeds every document again from
PostgreSQL. The old directory is left in place; delete it once the new collection serves searches.
"""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from appliance.packs.knowledge.embedder import Identity
from appliance.packs.knowledge.points import KnowledgePoint, recorded_identity
from appliance.sdk import log_fields as fields

log = logging.getLogger("appliance.knowledge")
BATCH = 256


def has_collection(path: Path, collection: str) -> bool:
    return (path / "collection" / collection).is_dir()


def migrate_collection(path: Path, collection: str, identity: Identity,
                       write: Callable[[Sequence[KnowledgePoint]], None]) -> int:
    """Write every point of ``collection`` from the local-mode storage at ``path``; returns how many
    (0 when there is nothing to carry over, or it cannot be)."""
    if not has_collection(path, collection):
        return 0
    try:
        moved, expected = _copy(path, collection, identity, write)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, indexing again from PostgreSQL is the way out
        log.warning("could not carry over the points of qdrant-client's local storage (%s: %s); every document "
                    "will be embedded again from PostgreSQL", type(exc).__name__, exc, extra=fields(path=str(path)))
        return 0
    if moved != expected:
        log.warning("carried over %d of %d points from qdrant-client's local storage; every document will be "
                    "embedded again from PostgreSQL", moved, expected, extra=fields(path=str(path)))
        return 0
    if moved:
        log.info("carried over %d points of collection %s from qdrant-client's local storage into Qdrant Edge; "
                 "%s is no longer used and may be deleted", moved, collection, path, extra=fields(path=str(path)))
    return moved


def _copy(path: Path, collection: str, identity: Identity,
          write: Callable[[Sequence[KnowledgePoint]], None]) -> tuple[int, int]:
    from qdrant_client import QdrantClient  # over a second to import: only when old local-mode data is found

    # qdrant-client leaves a lock file open when its constructor fails; collected here, not as a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = QdrantClient(path=str(path))
        finally:
            gc.collect()
    try:
        if not client.collection_exists(collection):
            return 0, 0
        info = client.get_collection(collection)
        recorded = recorded_identity(info.config.metadata or {})
        if recorded != identity:
            found = recorded.describe() if recorded else "an unknown embedder"
            raise ValueError(f"it holds vectors from {found}, not {identity.describe()}")
        expected = client.count(collection, exact=True).count
        moved, offset = 0, None
        while True:
            records, offset = client.scroll(collection, limit=BATCH, offset=offset, with_payload=True,
                                            with_vectors=True)
            # One unnamed dense vector per point: how the indexer wrote these collections.
            write([KnowledgePoint(str(r.id), list(cast(list[float], r.vector)), dict(r.payload or {}))
                   for r in records])
            moved += len(records)
            if offset is None:
                return moved, expected
    finally:
        client.close()

