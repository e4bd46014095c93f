"""``isolation = process``: the run in a child process the worker can kill, so a job that blocks without
checkpoints (a long call into C, a blocking request) can still be ended, and its memory and crashes stay in the
child.

The worker keeps the lease, the fence and the ledger; the child only runs the job body with a ``RunContext`` of
its own (the configuration read again from the same environment, its own Redis client and PostgreSQL pool, the
run's identity and fence), and sends back the summary, the items processed and the backlog, or the error. Children
come from a ``forkserver`` that has imported the appliance once, so a run costs a fork and its clients, not an
interpreter start (docs/performance.md has the figure). The parent watches the run's cancel token: when it is
set (timeout, lost lease, shutdown, a newer slot) the child is sent SIGTERM, which sets the child's own token,
so the job stops at its next checkpoint; a child still alive ``SHUTDOWN_TIMEOUT`` later is killed (SIGKILL).
A child that dies (a segfault, the OOM killer) fails the run, and the worker goes on. ``ctx.services``, the
objects a command passes in, are not available in the child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import traceback
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from appliance.errors import Cancelled, LockLost
from appliance.kernel.contract.context import CancelToken, RunContext
from appliance.kernel.contract.policy import Isolation
from appliance.kernel.runtime import tracing
from appliance.kernel.runtime.clock import SYSTEM

#: How often the parent looks at the child and the run's cancel token.
POLL = 0.02
#: How long a child waits for its last spans to be exported, within the second its parent gives it to end.
FLUSH_TIMEOUT = 0.5

_context: Any = None


def _forkserver() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["appliance.worker.isolation", *(tracing.PRELOAD if tracing.enabled() else ())])
    return _context


class RunFailed(Exception):
    """The child reported the job's exception (its text and traceback are the child's)."""

    def __init__(self, error: str, trace: str):
        super().__init__(error)
        self.trace = trace


def run_job(job: Any, ctx: RunContext, grace: float) -> Any:
    """Run ``job``'s body for ``ctx``: in this thread, or in a child process under ``isolation = process``."""
    if job.policy.isolation is not Isolation.PROCESS:
        return job.func(ctx)
    return _in_child(job, ctx, grace)


def _in_child(job: Any, ctx: RunContext, grace: float) -> Any:
    parent, child = multiprocessing.Pipe(duplex=False)
    func = job.func
    spec = {"target": f"{func.__module__}:{func.__qualname__}", "job": ctx.job, "slot": ctx.slot.isoformat(),
            "run_id": ctx.run_id, "attempt": ctx.attempt, "owner": ctx.owner, "trigger": ctx.trigger,
            "fence": ctx.issued_fence, "traceparent": tracing.traceparent()}
    proc = _forkserver().Process(target=_child_main, args=(spec, child), name=f"run-{ctx.job}", daemon=True)
    proc.start()
    child.close()
    stopping_since: float | None = None
    try:
        while proc.is_alive() and not parent.poll():
            if ctx.cancel.cancelled and stopping_since is None:
                stopping_since = ctx.clock.monotonic()
                os.kill(proc.pid, signal.SIGTERM)
            if stopping_since is not None and ctx.clock.monotonic() - stopping_since >= grace:
                proc.kill()  # ended hard: it did not reach a checkpoint in time
                break
            ctx.cancel.wait(POLL) if stopping_since is None else ctx.clock.sleep(POLL)
        result = _received(parent, proc.is_alive())
    finally:
        proc.join(1)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    return _outcome(result, proc.exitcode, ctx)


def _received(parent: Connection, alive: bool) -> Any:
    """What the child sent, or None when it died (or was killed) first: its end of the pipe closed unsent."""
    try:
        return parent.recv() if parent.poll(0.5 if alive else 0) else None
    except (EOFError, OSError):
        return None


def _outcome(result: Any, exitcode: int | None, ctx: RunContext) -> Any:
    if result is None:
        if ctx.cancel.cancelled:
            raise Cancelled(f"{ctx.cancel.reason}; its process was killed (isolation = process)")
        raise RuntimeError(f"the run's process died (exit code {exitcode}); the worker goes on")
    kind, payload = result
    ctx.processed_count = payload.get("processed", 0)
    ctx.backlog.update(payload.get("backlog", {}))
    if kind == "ok":
        return payload.get("summary")
    if kind == "cancelled":
        raise Cancelled(ctx.cancel.reason or payload.get("error", "cancelled"))
    if kind == "lease_lost":
        raise LockLost(payload.get("error", "lease lost"))
    raise RunFailed(payload["error"], payload.get("trace", ""))


def _child_main(spec: dict[str, Any], conn: Connection) -> None:
    """The child: rebuild what the run needs, run the job, send back what happened."""
    cancel = CancelToken(SYSTEM)
    signal.signal(signal.SIGTERM, lambda *_: cancel.cancel("stopped by its worker"))
    from appliance.kernel.contract.packs import load_attribute, load_settings
    from appliance.kernel.runtime.clients import make_pool, make_redis

    config = load_settings()
    tracing.start(config, "worker")  # before its clients: their calls are the slot span's children
    db = make_pool(config, max_size=2)
    db.open(wait=False)
    ctx = RunContext(job=spec["job"], slot=datetime.fromisoformat(spec["slot"]), run_id=spec["run_id"],
                     attempt=spec["attempt"], owner=spec["owner"], config=config,
                     redis=make_redis(config.core.redis_url), db=db, cancel=cancel, trigger=spec["trigger"],
                     log=logging.LoggerAdapter(logging.getLogger(f"appliance.job.{spec['job']}"), {}),
                     issued_fence=spec["fence"])
    try:
        with tracing.continued(spec.get("traceparent")):
            summary = load_attribute(spec["target"])(ctx)
        result: tuple[str, dict[str, Any]] = ("ok", {"summary": summary if isinstance(summary, dict) else None})
    except Cancelled as exc:
        result = ("cancelled", {"error": str(exc)})
    except LockLost as exc:
        result = ("lease_lost", {"error": str(exc)})
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which records and retries it
        result = ("error", {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
    result[1].update(processed=ctx.processed_count, backlog=ctx.backlog)
    conn.send(result)
    conn.close()
    tracing.flush(FLUSH_TIMEOUT)  # the parent waits a second for this process to end before it kills it
    db.close(timeout=1)
