"""The knowledge collection on a Qdrant server, through qdrant-client (gRPC when ``QDRANT_PREFER_GRPC``).

The collection records its embedder in Qdrant's collection metadata; payload indexes on ``tenant_id`` and
``document_id`` keep tenant-filtered searches and deletes by document fast.
"""

from __future__ import annotations

from collections.abc import Sequence

from qdrant_client import QdrantClient, models

from appliance.packs.knowledge import points
from appliance.packs.knowledge.embedder import Identity
from appliance.packs.knowledge.points import Hit, KnowledgePoint


class ServerStore:
    """The collection on one qdrant-client connection to a server."""

    mode = "server"

    def __init__(self, client: QdrantClient, collection: str, upsert_batch: int = 256):
        self.client = client
        self.collection = collection
        self.upsert_batch = upsert_batch
        self._closed = False

    @classmethod
    def connect(cls, url: str, api_key: str, collection: str, prefer_grpc: bool = True, grpc_port: int = 6334,
                timeout: float = 30.0, upsert_batch: int = 256) -> ServerStore:
        # No version check: qdrant-client runs it in a background thread at construction and only warns,
        # spuriously whenever the server is still starting (the worker waits for its /readyz instead).
        client = QdrantClient(url=url, api_key=api_key or None, prefer_grpc=prefer_grpc, grpc_port=grpc_port,
                              timeout=max(1, round(timeout)), check_compatibility=False)
        return cls(client, collection, upsert_batch=upsert_batch)

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    def ensure(self, identity: Identity) -> bool:
        if not self.exists():
            self.client.create_collection(
                self.collection, vectors_config=models.VectorParams(size=identity.dimensions,
                                                                    distance=models.Distance.COSINE),
                metadata=points.metadata(identity),
            )
            self._index_payload(set())
            return True
        info = self.client.get_collection(self.collection)
        self._check(info, identity)
        self._index_payload(set(info.payload_schema or {}))
        return False

    def check(self, identity: Identity) -> None:
        self._check(self.client.get_collection(self.collection), identity, adopt=False)

    def _check(self, info: models.CollectionInfo, identity: Identity, adopt: bool = True) -> None:
        vectors = info.config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise points.mismatch(self.collection, "named vectors", identity)
        if vectors.size != identity.dimensions or vectors.distance != models.Distance.COSINE:
            found = f"vectors of size {vectors.size} ({vectors.distance.value})"
            raise points.mismatch(self.collection, found, identity)
        recorded = points.recorded_identity(info.config.metadata or {})
        if recorded is None:
            # An empty collection created by hand is adopted; a filled one is refused.
            if info.points_count:
                raise points.mismatch(self.collection, f"{info.points_count} points from an unknown embedder", identity)
            if adopt:
                self.client.update_collection(self.collection, metadata=points.metadata(identity))
            return
        if recorded != identity:
            raise points.mismatch(self.collection, f"vectors from {recorded.describe()}", identity)

    def _index_payload(self, present: set[str]) -> None:
        for name in points.INDEXED_FIELDS:
            if name not in present:
                self.client.create_payload_index(self.collection, name, models.PayloadSchemaType.INTEGER, wait=True)

    def upsert(self, points: Sequence[KnowledgePoint]) -> None:
        for start in range(0, len(points), self.upsert_batch):
            batch = [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload)
                     for p in points[start:start + self.upsert_batch]]
            self.client.upsert(self.collection, points=batch, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), self.upsert_batch):
            selector = models.PointIdsList(points=list(ids[start:start + self.upsert_batch]))
            self.client.delete(self.collection, points_selector=selector, wait=True)

    def count(self, tenant_id: int | None = None) -> int:
        return self.client.count(self.collection, count_filter=_tenant_filter(tenant_id), exact=True).count

    def search(self, vector: list[float], tenant_id: int | None, limit: int) -> list[Hit]:
        result = self.client.query_points_groups(
            self.collection, group_by="document_id", query=vector, query_filter=_tenant_filter(tenant_id),
            limit=limit, group_size=1, with_payload=True,
        )
        return points.best_per_document(((g.hits[0].score, g.hits[0].payload or {}) for g in result.groups), limit)

    def points(self) -> list[KnowledgePoint]:
        found, offset = [], None
        while True:
            records, offset = self.client.scroll(self.collection, limit=1000, offset=offset, with_payload=True)
            found += [KnowledgePoint(str(r.id), [], dict(r.payload or {})) for r in records]
            if offset is None:
                return found

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()

    def __enter__(self) -> ServerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tenant_filter(tenant_id: int | None) -> models.Filter | None:
    if tenant_id is None:
        return None
    return models.Filter(must=[models.FieldCondition(key="tenant_id", match=models.MatchValue(value=tenant_id))])

