"""A job for the sidecar's process tests (loaded through ``APPLIANCE_JOBS_FILE``): it does three items of
work and reports a backlog, as the CRM job pack does, so the worker writes every kind of metric."""

from __future__ import annotations

PROCESSED = 3
QUEUED_CALLS = 7


def work(ctx) -> dict:
    ctx.processed(PROCESSED)
    ctx.set_backlog("queued_calls", QUEUED_CALLS)
    return {"done": PROCESSED}
