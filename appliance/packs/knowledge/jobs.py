"""The knowledge pack's jobs: ``knowledge-indexer`` (every minute) and ``knowledge-snapshots`` (daily, server
mode).

The job functions import qdrant-client and openai when they first run: ``check-config`` and ``appliance jobs
run`` resolve every job, and those libraries take over a second to import.
"""

from __future__ import annotations

from typing import Any

from appliance.sdk import JobSpec, RunContext


def index_documents(ctx: RunContext) -> dict[str, Any]:
    """The ``knowledge-indexer`` job (``appliance.packs.knowledge.indexer.run``)."""
    from appliance.packs.knowledge.indexer import run

    return run(ctx)


def snapshot_collection(ctx: RunContext) -> dict[str, Any]:
    """The ``knowledge-snapshots`` job (``appliance.packs.knowledge.snapshots.run``)."""
    from appliance.packs.knowledge.snapshots import run

    return run(ctx)


JOBS: list[JobSpec] = [
    JobSpec(name="knowledge-indexer", func=index_documents, schedule="* * * * *", needs=("db", "qdrant"),
            description="chunk, embed and upsert changed knowledge documents into Qdrant"),
    JobSpec(name="knowledge-snapshots", func=snapshot_collection, schedule="30 3 * * *", needs=("qdrant",),
            description="daily snapshot of the knowledge collection on the Qdrant server, keeping the newest N"),
]
