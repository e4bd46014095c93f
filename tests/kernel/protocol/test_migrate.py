"""Versioned migrations against a real PostgreSQL: idempotent, one transaction each, safe for replicas
starting together, and a clear refusal of a database migrated by a newer appliance."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from appliance.kernel.protocol.db.migrate import Migration, SchemaTooNew, available, current_version, migrate


def _versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_applies_every_migration_once_and_a_second_run_does_nothing(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        first = migrate(conn)
        second = migrate(conn)
        version = current_version(conn)
    assert [m.version for m in first] == [m.version for m in available()]
    assert second == []
    assert version == available()[-1].version
    assert _versions(database_url) == [m.version for m in available()]


def test_replicas_migrating_together_apply_each_migration_once(database_url):
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                applied.append([m.version for m in migrate(conn)])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(applied, key=len) == [[], [], [], [m.version for m in available()]]
    assert _versions(database_url) == [m.version for m in available()]


def test_a_failing_migration_rolls_back_alone(database_url):
    good = Migration(1, "good", "CREATE TABLE good (id int)")
    bad = Migration(2, "bad", "CREATE TABLE half (id int); SELECT no_such_function()")
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedFunction):
            migrate(conn, [good, bad])
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert "good" in tables and "half" not in tables
    assert _versions(database_url) == [1]


def test_a_database_from_a_newer_appliance_is_refused_clearly(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')")
        with pytest.raises(SchemaTooNew, match="schema version 9999 but this appliance knows only up to"):
            migrate(conn)
    result = subprocess.run([sys.executable, "-m", "appliance", "migrate"], capture_output=True, text=True,
                            env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode != 0
    assert "schema version 9999" in result.stderr and "Traceback" not in result.stderr
