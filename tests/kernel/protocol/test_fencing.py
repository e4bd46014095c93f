"""Fencing numbers from PostgreSQL: they only grow, and a stale one cannot commit."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from appliance.errors import LockLost
from appliance.kernel.protocol.db.rows import one
from appliance.kernel.protocol.fencing import check_fence, issue_fence
from tests.services import wait_until


def test_fences_only_grow_per_job(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        assert [issue_fence(conn, "a") for _ in range(3)] == [1, 2, 3]
        assert issue_fence(conn, "b") == 1


def test_a_run_with_a_stale_fence_cannot_commit(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v text)")
        old = issue_fence(conn, "job")
        issue_fence(conn, "job")  # a newer run started: the old one lost its lease
    with psycopg.connect(migrated_db) as conn:
        with pytest.raises(LockLost), conn.transaction():
            conn.execute("INSERT INTO t VALUES ('late write')")
            check_fence(conn, "job", old)
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_a_newer_fence_waits_for_the_current_holders_commit(migrated_db):
    """check_fence holds the fence row until the writing transaction ends: no newer run slips in between."""
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        current = issue_fence(conn, "job")
    issued_at: list[float] = []

    def newer_run() -> None:
        with psycopg.connect(migrated_db, autocommit=True) as other:
            issue_fence(other, "job")
            issued_at.append(time.monotonic())

    with psycopg.connect(migrated_db) as conn:
        with conn.transaction():
            check_fence(conn, "job", current)
            thread = threading.Thread(target=newer_run)
            thread.start()
            wait_until(lambda: _waiting_for_a_lock(migrated_db), 10, "the newer run blocked on the fence row")
            assert issued_at == []
            committed_at = time.monotonic()
        thread.join(5)
    assert issued_at and issued_at[0] >= committed_at


def _waiting_for_a_lock(url: str) -> bool:
    """Whether a session of this database waits for a row lock (the other run's ``issue_fence``)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return bool(one(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock'"))[0])
