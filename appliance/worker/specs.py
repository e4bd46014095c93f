"""At start, the worker stores the effective spec of each of its jobs as a version (a spec the job had before keeps
its number), so that every run records the version it ran under and ``appliance schedule diff`` can compare two.
Without PostgreSQL the runs record no version; the worker does not wait for it."""

from __future__ import annotations

import logging

from appliance.kernel.contract.catalog import JobSettings
from appliance.kernel.contract.spec import EffectiveSpec
from appliance.kernel.protocol import spec_versions
from appliance.kernel.protocol.ledger import CONNECT_WAIT, Ledger
from appliance.kernel.runtime.logs import fields

log = logging.getLogger("appliance.worker")


def store_versions(ledger: Ledger | None, jobs: list[JobSettings], worker: str) -> dict[str, int]:
    """Job -> the version of its effective spec, stored where new."""
    found: dict[str, int] = {}
    if ledger is None:
        return found
    try:
        with ledger.pool.connection(timeout=CONNECT_WAIT) as conn:
            for job in jobs:
                spec = EffectiveSpec.of(job)
                found[job.name] = spec_versions.store(conn, job.name, spec.hash, spec.to_json(), worker)
    except Exception as exc:  # noqa: BLE001 - PostgreSQL down at start: runs record no version
        log.warning("could not store the jobs' spec versions", extra=fields(error=type(exc).__name__))
    return found
