"""The ``knowledge-snapshots`` job: a daily snapshot of the collection on the Qdrant server (seed 004's
``POST /collections/bharat_crm_knowledge/snapshots``), keeping the newest ``QDRANT_SNAPSHOT_KEEP``.

Snapshots are a server feature; in embedded mode the run does nothing and says so in its summary
(``appliance backup`` archives the embedded storage with the database instead).
"""

from __future__ import annotations

from typing import cast

from appliance.packs.knowledge import services
from appliance.packs.knowledge.server_store import ServerStore
from appliance.packs.knowledge.store import server_mode
from appliance.sdk import RunContext
from appliance.sdk import log_fields as fields


def run(ctx: RunContext) -> dict:
    if not server_mode(ctx.config):
        return {"skipped": "embedded Qdrant has no snapshots; set QDRANT_URL to use the Qdrant server"}
    with services.store(ctx.services, ctx.config) as opened:
        store = cast(ServerStore, opened)  # server mode: services.store opened the server's
        if not store.exists():
            return {"skipped": f"collection {store.collection} does not exist yet"}
        ctx.checkpoint()
        created = store.client.create_snapshot(store.collection, wait=True)
        name = created.name if created is not None else None
        deleted = prune(store, ctx.config.knowledge.snapshot_keep)
    ctx.processed(1)
    ctx.log.info("Qdrant snapshot created", extra=fields(collection=store.collection, snapshot=name,
                                                         deleted=len(deleted)))
    return {"created": name, "deleted": deleted}


def prune(store: ServerStore, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest snapshots of the collection; returns the names deleted."""
    snapshots = store.client.list_snapshots(store.collection)
    snapshots.sort(key=lambda s: (s.creation_time or "", s.name), reverse=True)
    deleted = []
    for snapshot in snapshots[keep:]:
        store.client.delete_snapshot(store.collection, snapshot.name, wait=True)
        deleted.append(snapshot.name)
    return deleted
