"""The knowledge indexer: documents embedded into the appliance's Qdrant.

``JOBS`` holds ``knowledge-indexer`` (every minute) and ``knowledge-snapshots`` (daily, server mode).
``knowledge_status(config)`` tells ``/health`` which embedder and which Qdrant are in use.

The job functions import qdrant-client and openai when they first run: this package is imported with the
configuration by every command, and those libraries take over a second to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.jobspec import JobSpec
from appliance.knowledge.status import knowledge_status

if TYPE_CHECKING:
    from appliance.context import RunContext


def index_documents(ctx: "RunContext") -> dict:
    """The ``knowledge-indexer`` job (``appliance.knowledge.indexer.run``)."""
    from appliance.knowledge.indexer import run

    return run(ctx)


def snapshot_collection(ctx: "RunContext") -> dict:
    """The ``knowledge-snapshots`` job (``appliance.knowledge.snapshots.run``)."""
    from appliance.knowledge.snapshots import run

    return run(ctx)


JOBS: list[JobSpec] = [
    JobSpec(name="knowledge-indexer", func=index_documents, schedule="* * * * *", needs=("db", "qdrant"),
            description="chunk, embed and upsert changed knowledge documents into Qdrant"),
    JobSpec(name="knowledge-snapshots", func=snapshot_collection, schedule="30 3 * * *", needs=("qdrant",),
            description="daily snapshot of the knowledge collection on the Qdrant server, keeping the newest N"),
]

__all__ = ["JOBS", "index_documents", "knowledge_status", "snapshot_collection"]
