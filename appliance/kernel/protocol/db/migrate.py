"""Versioned migrations: ``migrations/NNNN_name.sql`` of the kernel and of every installed job pack (its
``Pack.migrations``), applied in order, each in its own transaction, under a PostgreSQL advisory lock so
replicas that start together do not race.

Version ranges keep the parts of the project apart: 1-9 and then 70-99 the kernel (runs, fences, the ledger),
10-49 the CRM job pack, 50-69 the knowledge indexer; a pack of one's own takes a range no other uses (100 and up).
A kernel migration of the second range applies after the packs' of a new database: none of theirs may need it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

import psycopg

from appliance.errors import ApplianceError
from appliance.kernel.contract.packs import Pack, installed_packs

log = logging.getLogger("appliance.migrate")

#: Arbitrary constant key of the advisory lock held while migrating.
ADVISORY_LOCK_KEY = 0x617070_6C69616E
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaTooNew(ApplianceError):
    """The database was migrated by a newer version of the appliance."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available(packs: Iterable[Pack] | None = None) -> list[Migration]:
    """The kernel's migrations and those of ``packs`` (default: every installed pack), by version."""
    folders = [resources.files("appliance.kernel.protocol.db").joinpath("migrations")]
    folders += [resources.files(pack.migrations).joinpath("migrations")
                for pack in (installed_packs() if packs is None else packs) if pack.migrations]
    found = [migration for folder in folders for migration in _read(folder)]
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise ApplianceError(f"duplicate migration versions in {versions}")
    return found


def _read(folder: Traversable) -> list[Migration]:
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return found


def migrate(conn: psycopg.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply every pending migration (default: ``available()``); return those applied.

    ``conn`` must be in autocommit mode. Each migration runs in its own transaction, so a failing one leaves
    the database at the version before it; callers running at the same time wait on an advisory lock and
    then find nothing left to do. Raises ``SchemaTooNew`` when the database knows a newer version.
    """
    migrations = available() if migrations is None else sorted(migrations, key=lambda m: m.version)
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        newest_known = migrations[-1].version if migrations else 0
        unknown = sorted(v for v in applied if v > newest_known)
        if unknown:
            raise SchemaTooNew(
                f"the database has schema version {unknown[-1]} but this appliance knows only up to "
                f"{newest_known}: run a newer appliance, or restore a database backup made for this version"
            )
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                             (migration.version, migration.name))
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def current_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0
