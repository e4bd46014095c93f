"""A job's spec (schedule, settings, parameters, callable) as this worker starts with it: a change from the spec
the cluster last started with is one audit-log row (``job.spec``, before and after, by this worker).

Replicas that start together with the same new spec write one row: the row of ``job_specs`` is locked while it is
compared (a new one is inserted with ``ON CONFLICT DO NOTHING``, so only the inserter audits it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.protocol import audit_log
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.redaction import Redactor

log = logging.getLogger("appliance.worker")


def spec_of(job: JobSettings) -> dict[str, Any]:
    func = job.func
    return {"callable": f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', repr(func))}",
            "schedule": job.schedule.text, "timezone": job.timezone, "lock_ttl": job.lock_ttl,
            "max_retries": job.max_retries, "grace": job.grace, "enabled": job.enabled, "needs": list(job.needs),
            "description": job.description, "source": job.source, "params": [p.to_json() for p in job.params]}


def version_of(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_specs(ledger: Ledger | None, jobs: list[JobSettings], actor: str, redact: Redactor) -> int:
    """Audit each job whose spec changed; returns how many did. PostgreSQL down: logged, nothing recorded."""
    if ledger is None:
        return 0
    changed = 0
    try:
        with ledger.pool.connection(timeout=2.0) as conn:
            for job in jobs:
                spec = spec_of(job)
                version = version_of(spec)
                with conn.transaction():
                    row = conn.execute("SELECT version, spec FROM job_specs WHERE job = %s FOR UPDATE",
                                       (job.name,)).fetchone()
                    if row is not None and row[0] == version:
                        continue
                    if row is None:
                        inserted = conn.execute(
                            "INSERT INTO job_specs (job, version, spec) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                            (job.name, version, json.dumps(spec, default=str))).rowcount
                        if not inserted:
                            continue
                    else:
                        conn.execute("UPDATE job_specs SET version = %s, spec = %s, changed_at = clock_timestamp() "
                                     "WHERE job = %s", (version, json.dumps(spec, default=str), job.name))
                    audit_log.record(conn, redact, actor, "job.spec", job.name, None,
                                     row[1] if row is not None else None, spec, version)
                    changed += 1
    except Exception as exc:  # noqa: BLE001 - PostgreSQL down at start: the next start compares again
        log.warning("job specs not compared", extra=fields(error=type(exc).__name__))
    return changed
