"""Versions of each job's effective spec in PostgreSQL (``job_specs``, migration 0007): stored when a worker
starts with a spec its job never had, read by ``appliance schedule diff`` (``appliance.kernel.contract.spec``
builds and hashes the JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from appliance.kernel.protocol.db.rows import one


@dataclass(frozen=True)
class SpecVersion:
    job: str
    version: int
    hash: str
    spec: dict[str, Any]
    created_at: datetime
    created_by: str | None


def store(conn: psycopg.Connection, job: str, spec_hash: str, spec: dict[str, Any], worker: str) -> int:
    """The version of this spec of ``job``: its number when seen before, else the next one, stored."""
    (version,) = one(conn.execute("SELECT appliance_spec_version(%s, %s, %s, %s)",
                                  (job, spec_hash, json.dumps(spec), worker)))
    return int(version)


def versions(conn: psycopg.Connection, job: str) -> list[SpecVersion]:
    """Every stored version of ``job``'s spec, oldest first."""
    rows = conn.execute("SELECT job, version, hash, spec, created_at, created_by FROM job_specs WHERE job = %s "
                        "ORDER BY version", (job,)).fetchall()
    return [SpecVersion(*row) for row in rows]


def latest(conn: psycopg.Connection, job: str) -> SpecVersion | None:
    """The newest stored version of ``job``'s spec, or None."""
    row = conn.execute("SELECT job, version, hash, spec, created_at, created_by FROM job_specs WHERE job = %s "
                       "ORDER BY version DESC LIMIT 1", (job,)).fetchone()
    return SpecVersion(*row) if row else None
