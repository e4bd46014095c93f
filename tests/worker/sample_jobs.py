"""Jobs used by the worker's process tests (loaded through ``APPLIANCE_JOBS_FILE``).

Each records what it did in the test's Redis, so the test can check slots, owners and overlap afterwards.
Parameters come from the job's name suffix-free keys in Redis (``test:param:<name>``) so one file serves all.
"""

from __future__ import annotations

import json
import os
import sys
import time

RUNS = "test:runs"


def _param(ctx, key: str, default: float) -> float:
    value = ctx.redis.hget(f"test:param:{ctx.job}", key)
    return float(value) if value is not None else default


def _record(ctx, event: str, **extra) -> None:
    ctx.redis.rpush(RUNS, json.dumps({"job": ctx.job, "event": event, "slot": ctx.slot.isoformat(),
                                      "pid": os.getpid(), "t": time.time(), "attempt": ctx.attempt,
                                      "trigger": ctx.trigger, **extra}))


def tick(ctx) -> dict[str, float]:
    """Sleeps ``duration`` seconds (default 0.2) between a start and an end record; no checkpoints. Returns a
    summary ``{"slept": duration}``."""
    _record(ctx, "start")
    duration = _param(ctx, "duration", 0.2)
    time.sleep(duration)
    _record(ctx, "end")
    ctx.processed(1)
    return {"slept": duration}


def steps(ctx) -> None:
    """``steps`` checkpointed steps of ``step`` seconds each (a job that cooperates with cancellation)."""
    _record(ctx, "start")
    for _ in range(int(_param(ctx, "steps", 10))):
        ctx.sleep(_param(ctx, "step", 0.1))
    _record(ctx, "end")


def stubborn(ctx) -> None:
    """Ignores checkpoints: sleeps ``duration`` seconds in one go."""
    _record(ctx, "start")
    time.sleep(_param(ctx, "duration", 60))
    _record(ctx, "end")


def flaky(ctx) -> None:
    """Fails while ``test:param:<job> fail`` is 1."""
    _record(ctx, "start")
    if _param(ctx, "fail", 1) == 1:
        raise RuntimeError("flaky job failed on purpose")
    _record(ctx, "end")


def needs_db(ctx) -> None:
    """Uses PostgreSQL through the fencing number (fails while the database is down)."""
    _record(ctx, "start", fence=ctx.fence)
    _record(ctx, "end")


def with_params(ctx) -> dict:
    """Records the parameters it was given (``ctx.params``) with its slot and trigger."""
    _record(ctx, "end", params=ctx.params)
    return {"params": ctx.params}


def traced(ctx) -> dict:
    """One call of each kind a job makes: a PostgreSQL query through ``ctx.db``, a Redis command, and an HTTP
    request to the URL in ``test:param:<job> url`` (a provider stand-in) when set; logs a line; records which
    OpenTelemetry modules this worker process has loaded."""
    import httpx

    with ctx.db.connection() as conn:
        conn.execute("SELECT 1").fetchone()
    url = ctx.redis.hget(f"test:param:{ctx.job}", "url")
    if url:
        httpx.get(url, timeout=5).raise_for_status()
    ctx.log.info("traced job called its services")
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
    _record(ctx, "end", modules=loaded)
    return {"modules": len(loaded)}
