"""Settings of the knowledge indexer: embeddings, chunking, the Qdrant collection and its snapshots
(seed 004 "Qdrant Configuration": collection ``bharat_crm_knowledge``, 1536 dimensions, cosine)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config.env import EnvReader

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: The model name of the offline local embedder, used when no ``OPENAI_API_KEY`` is set.
LOCAL_MODEL = "local-hash-v1"

#: The embeddings API takes at most 2,048 inputs per request.
MAX_INPUTS_PER_REQUEST = 2048
#: One input may hold at most 8,191 tokens; 16,000 characters stay under it even for dense text.
MAX_CHUNK_CHARS = 16000


@dataclass(frozen=True)
class KnowledgeConfig:
    openai_api_key: str
    openai_base_url: str
    embedding_model: str
    embedding_dimensions: int
    collection: str
    chunk_size: int = 1000
    chunk_overlap: int = 200
    batch_size: int = 50
    embedding_batch_size: int = 256
    embedding_timeout: float = 30.0
    embedding_max_retries: int = 4
    breaker_threshold: int = 5
    breaker_reset: float = 60.0
    upsert_batch_size: int = 256
    qdrant_prefer_grpc: bool = True
    qdrant_timeout: float = 30.0
    storage_wait: float = 10.0
    snapshot_keep: int = 7

    @property
    def local_embedder(self) -> bool:
        """No ``OPENAI_API_KEY``: documents are embedded by the offline local embedder."""
        return not self.openai_api_key


def load_knowledge(env: EnvReader) -> KnowledgeConfig:
    chunk_size = env.int("KNOWLEDGE_CHUNK_SIZE", 1000, min=100, max=MAX_CHUNK_CHARS)
    chunk_overlap = env.int("KNOWLEDGE_CHUNK_OVERLAP", 200, min=0, max=MAX_CHUNK_CHARS)
    if chunk_overlap >= chunk_size:
        env.problem("KNOWLEDGE_CHUNK_OVERLAP", chunk_overlap, f"less than KNOWLEDGE_CHUNK_SIZE ({chunk_size})")
        chunk_overlap = min(200, chunk_size // 5)
    return KnowledgeConfig(
        openai_api_key=env.secret("OPENAI_API_KEY"),
        openai_base_url=env.url("OPENAI_BASE_URL", OPENAI_DEFAULT_BASE_URL, ("http", "https")),
        embedding_model=env.str("EMBEDDING_MODEL", "text-embedding-3-small"),
        embedding_dimensions=env.int("EMBEDDING_DIMENSIONS", 1536, min=1, max=65536),
        collection=env.str("QDRANT_COLLECTION", "bharat_crm_knowledge"),
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        batch_size=env.int("KNOWLEDGE_BATCH_SIZE", 50, min=1, max=5000),
        embedding_batch_size=env.int("EMBEDDING_BATCH_SIZE", 256, min=1, max=MAX_INPUTS_PER_REQUEST),
        embedding_timeout=env.duration("EMBEDDING_TIMEOUT", 30.0, unit="s", min=0.1),
        embedding_max_retries=env.int("EMBEDDING_MAX_RETRIES", 4, min=0, max=20),
        breaker_threshold=env.int("EMBEDDING_BREAKER_THRESHOLD", 5, min=1, max=1000),
        breaker_reset=env.duration("EMBEDDING_BREAKER_RESET", 60.0, unit="s", min=0.0),
        upsert_batch_size=env.int("QDRANT_UPSERT_BATCH_SIZE", 256, min=1, max=10000),
        qdrant_prefer_grpc=env.bool("QDRANT_PREFER_GRPC", True),
        qdrant_timeout=env.duration("QDRANT_TIMEOUT", 30.0, unit="s", min=0.1),
        storage_wait=env.duration("QDRANT_LOCAL_WAIT", 10.0, unit="s", min=0.0),
        snapshot_keep=env.int("QDRANT_SNAPSHOT_KEEP", 7, min=1, max=1000),
    )
