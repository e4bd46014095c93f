"""At start, the worker stores the effective spec of each of its jobs as a version (a spec the job had before keeps
its number), so that every run records the version it ran under and ``appliance schedule diff`` can compare two;
a spec that differs from the job's newest version is also one audit-log row (``job.spec``, before and after, by
this worker). Replicas starting together with the same new spec write one version and one row: the job's specs
are compared under a transaction-scoped advisory lock. Without PostgreSQL the runs record no version and nothing
is audited; the worker does not wait for it.
"""

from __future__ import annotations

import logging

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.contract.spec import EffectiveSpec
from appliance.kernel.protocol import audit_log, spec_versions
from appliance.kernel.protocol.ledger import CONNECT_WAIT, Ledger
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.redaction import Redactor

log = logging.getLogger("appliance.worker")


def store_versions(ledger: Ledger | None, jobs: list[JobSettings], worker: str, redact: Redactor) -> dict[str, int]:
    """Job -> the version of its effective spec, stored where new; a change audited once."""
    found: dict[str, int] = {}
    if ledger is None:
        return found
    try:
        with ledger.pool.connection(timeout=CONNECT_WAIT) as conn:
            for job in jobs:
                spec = EffectiveSpec.of(job)
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"job_specs:{job.name}",))
                    before = spec_versions.latest(conn, job.name)
                    version = spec_versions.store(conn, job.name, spec.hash, spec.to_json(), worker)
                    if before is None or before.hash != spec.hash:
                        audit_log.record(conn, redact, f"worker:{worker}", "job.spec", job.name, None,
                                         before.spec if before else None, spec.to_json(), f"version {version}")
                found[job.name] = version
    except Exception as exc:  # noqa: BLE001 - PostgreSQL down at start: runs record no version, nothing audited
        log.warning("could not store the jobs' spec versions", extra=fields(error=type(exc).__name__))
    return found
