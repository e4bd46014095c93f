"""The database in the archive: a snapshot exported at the moment every pack's store is quiet, ``pg_dump`` of
that snapshot in custom format, and ``pg_restore``; the tools are those next to the server's programs.

``pg_dump`` alone is consistent (one snapshot), but it takes its snapshot when it starts, a moment the
packs cannot wait for. So a transaction of ours exports its snapshot (``pg_export_snapshot``) exactly when
the packs say, and ``pg_dump --snapshot`` dumps what that transaction sees, after the packs have let go.

The password of an external ``DATABASE_URL`` reaches the tools in ``PGPASSWORD``, never on a command line.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from appliance.config import Config, process_environment, redact_url
from appliance.errors import ApplianceError
from appliance.kernel.protocol.db.rows import one
from appliance.kernel.runtime.clients import connect_db
from appliance.supervise.embedded import find_pg_bin
from appliance.supervise.pgversion import major_of, tool_version


class Snapshot:
    """A repeatable-read transaction whose snapshot ``pg_dump`` shares, once ``take`` has exported it."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.id: str | None = None

    def take(self) -> None:
        """Export the snapshot: the transaction's first statement, so the snapshot is fixed right here."""
        if self.id is not None:
            raise ApplianceError("the database snapshot was asked for twice")
        self.id = one(self.conn.execute("SELECT pg_export_snapshot()"))[0]

    def facts(self) -> dict[str, Any]:
        """The server's version and the schema's, as the snapshot sees them."""
        version, number = one(self.conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int"))
        schema = one(self.conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))[0]
        return {"server_version": version, "server_major": number // 10000, "schema_version": schema}


@contextmanager
def snapshot(config: Config) -> Iterator[Snapshot]:
    """An open transaction ready to export its snapshot; kept open until the dump is done."""
    with connect_db(config, autocommit=False) as conn:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        yield Snapshot(conn)
        conn.rollback()


def _libpq(config: Config) -> tuple[str, dict[str, str]]:
    """The configuration's connection string without its password, and the tools' environment with the
    password in ``PGPASSWORD`` (readable by this user only, unlike a command line)."""
    params = conninfo_to_dict(config.core.database_url)
    password = params.pop("password", None)
    env = process_environment()
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def _run(config: Config, argv: list[str], what: str) -> None:
    dbname, env = _libpq(config)
    done = subprocess.run([*argv, f"--dbname={dbname}"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        said = " ".join(done.stderr.split())[-800:]
        raise ApplianceError(f"{what} failed (exit {done.returncode}): {redact_url(said)}")


def dump(config: Config, snapshot_id: str, target: Path) -> dict[str, Any]:
    """``pg_dump`` of the exported snapshot into ``target`` (custom format); returns the tool's version."""
    version = tool_version("pg_dump")
    _run(config, [find_pg_bin("pg_dump"), "--format=custom", f"--snapshot={snapshot_id}", "--no-password",
                  f"--file={target}"], "pg_dump")
    return {"pg_dump": version, "dump_major": major_of(version), "format": "custom"}


def restore(config: Config, source: Path, clean: bool) -> None:
    """``pg_restore`` of ``source`` in one transaction: all of it or, on any error, nothing. Objects become the
    connecting role's (the application role), with no grants of the old server's roles. ``clean``: drop each
    archived object first (a database that has them); otherwise the database is expected empty."""
    _run(config, [find_pg_bin("pg_restore"), "--single-transaction", "--exit-on-error", "--no-owner",
                  "--no-privileges", "--no-password", *(["--clean", "--if-exists"] if clean else []), str(source)],
         "pg_restore")
