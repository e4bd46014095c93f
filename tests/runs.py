"""Run contexts for tests that call a job function directly: the run is opened in the ledger exactly as the
worker's runner opens it (``appliance_start_run``: fence issued, run recorded ``running``), so the job's
``complete_slot`` and ``check_fence`` see what they see under the worker."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

from appliance.kernel.contract.context import RunContext
from appliance.kernel.protocol.db.rows import one
from appliance.kernel.runtime.clock import SYSTEM


def open_run(pool: ConnectionPool, job: str, slot: datetime, run_id: str) -> int:
    """Open a scheduled run of ``job`` at ``slot``; returns its fence."""
    with pool.connection() as conn:
        fence, done = one(conn.execute("SELECT * FROM appliance_start_run(%s, %s, 'schedule', %s, 'test', 'test', "
                                       "1, %s)", (job, slot, run_id, SYSTEM.now())))
    assert not done, f"slot {slot} of {job} is done already"
    return int(fence)


def run_context(pool: ConnectionPool, job: str, config: Any, slot: datetime | None = None,
                **extra: Any) -> RunContext:
    """A ``RunContext`` for one scheduled run, opened in the ledger."""
    slot = slot or SYSTEM.now()
    run_id = uuid.uuid4().hex[:12]
    fence = open_run(pool, job, slot, run_id)
    return RunContext(job=job, slot=slot, run_id=run_id, attempt=1, owner="test", config=config, redis=None,
                      db=pool, log=logging.LoggerAdapter(logging.getLogger(f"test.{job}"), {}),
                      issued_fence=fence, **extra)
