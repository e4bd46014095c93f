"""The knowledge collection's pieces that every Qdrant store shares: point ids, the point and the hit, the
record of the embedder that filled a collection, and the refusal to mix embedders. Pure: no Qdrant here."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from appliance.packs.knowledge.embedder import Identity
from appliance.sdk import ApplianceError

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
