"""How the knowledge indexer is set up, for ``/health`` and ``appliance check-config``: which embedder
(OpenAI or the offline local one) and which Qdrant (a server, or Qdrant Edge embedded in the process that
uses it). Reads only the configuration."""

from __future__ import annotations

from typing import Any

from appliance.config import Config
from appliance.packs.knowledge.settings import LOCAL_MODEL


def knowledge_status(config: Config) -> dict[str, Any]:
    k = config.knowledge
    # The sidecar is not given OPENAI_API_KEY; that it is set is enough to tell which embedder the worker uses.
    local = k.local_embedder and "OPENAI_API_KEY" not in config.withheld_secrets
    status = {
        "embedder": "local" if local else "openai",
        "model": LOCAL_MODEL if local else k.embedding_model,
        "dimensions": k.embedding_dimensions,
        "offline": local,
        "collection": k.collection,
        "qdrant": "server" if config.core.qdrant_url_set else "embedded",
        "qdrant_engine": "qdrant server" if config.core.qdrant_url_set else "qdrant-edge",
    }
    if local:
        status["note"] = ("no OPENAI_API_KEY: documents are embedded by the local deterministic embedder "
                          "(offline; matches shared words, not meaning)")
    return status
