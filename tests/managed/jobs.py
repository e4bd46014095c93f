"""Jobs of the managed-service tests: they touch nothing in Redis but what the worker itself does, so they
run under the appliance's ACL user, and one of them fails to exercise retries, dead letters and alerts."""

from __future__ import annotations


def ok(ctx) -> dict:
    ctx.checkpoint()
    ctx.processed(1)
    return {"ok": True}


def boom(ctx) -> None:
    raise RuntimeError("boom on purpose")
