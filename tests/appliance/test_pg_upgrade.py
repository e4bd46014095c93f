"""An embedded PostgreSQL data directory made by the previous version (``initdb -U appliance --auth=trust``:
the application role is the bootstrap superuser, any local user may log in) is upgraded in place by the next
``appliance run``'s start step: nothing lost, password (SCRAM) authentication only, the application role no
longer a superuser yet owner of everything it had. Real ``initdb`` and ``postgres`` in a temp dir."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess

import psycopg
import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.protocol.db.migrate import migrate
from appliance.supervise import embedded
from appliance.supervise.plan import POSTGRES_DIR, plan_services
from appliance.supervise.prepare import make_dirs, migrate_database
from tests.appliance.harness import appliance_home
from tests.services import wait_until

pytestmark = pytest.mark.process

#: What the application had made of its database: its migrations plus objects of every kind whose owner
#: must follow (a table with a serial, an identity column, a view, a function, an enum type, a free sequence).
LEGACY = """
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE legacy_notes (id serial PRIMARY KEY, body text NOT NULL, mood mood NOT NULL DEFAULT 'calm');
CREATE TABLE legacy_counts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n int NOT NULL);
CREATE VIEW legacy_view AS SELECT body FROM legacy_notes;
CREATE FUNCTION legacy_double(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2';
CREATE SEQUENCE legacy_free;
INSERT INTO legacy_notes (body) VALUES ('kept 1'), ('kept 2');
INSERT INTO legacy_counts (n) VALUES (41);
"""


def _old_cluster(home, user):
    """The previous version's layout and commands, data included."""
    data, run = home / POSTGRES_DIR, home / "run"
    home.mkdir(parents=True)
    for path, mode in ((data, 0o700), (run, 0o755)):
        path.mkdir(mode=mode)
        embedded.give_to(path, user)
    subprocess.run(embedded.as_user([embedded.find_pg_bin("initdb"), "-D", str(data), "-U", "appliance",
                                     "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
                                    user), check=True, capture_output=True)
    server = subprocess.Popen(embedded.as_user([embedded.find_pg_bin("postgres"), "-D", str(data), "-k", str(run),
                                                "-c", "listen_addresses="], user),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old_url = f"postgresql:///{{}}?host={run}&user=appliance"
    try:
        wait_until(lambda: psycopg.connect(old_url.format("postgres"), connect_timeout=1).close() or True, 30, "pg")
        with psycopg.connect(old_url.format("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE appliance")
        with psycopg.connect(old_url.format("appliance"), autocommit=True) as conn:
            migrate(conn)
            conn.execute(LEGACY)
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'appliance'").fetchone() == (True,)
    finally:
        server.send_signal(2)
        server.wait(15)


def _serve(config, user):
    argv = embedded.postgres_argv(config.core.home / POSTGRES_DIR, config.core.run_dir, user)
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: psycopg.connect(config.core.database_url, connect_timeout=1).close() or True, 30, "pg")
    return server


def _refused(url: str) -> str:
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(url, connect_timeout=3).close()
    return str(err.value)


def test_an_old_trust_cluster_is_upgraded_in_place_and_nothing_is_lost(caplog, keep_umask):
    home = appliance_home()
    user = embedded.run_as_user()
    try:
        _old_cluster(home, user)
        config = load_settings({"APPLIANCE_HOME": str(home)}, env_file=None)
        plan = plan_services(config, which=lambda _: None)
        make_dirs(config, plan)
        with caplog.at_level(logging.INFO, logger="appliance.run"):
            migrate_database(config, plan)
        assert any("upgraded" in r.getMessage() for r in caplog.records), caplog.text
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="appliance.run"):
            migrate_database(config, plan)
        assert not any("upgraded" in r.getMessage() for r in caplog.records), "a second start changes nothing"

        run = config.core.run_dir
        hba = (home / POSTGRES_DIR / "pg_hba.conf").read_text()
        assert "trust" not in hba and "scram-sha-256" in hba
        for path in (config.core.database_password_file, config.core.database_passfile):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(config.core.secrets_dir.stat().st_mode) == stat.S_IMODE(run.stat().st_mode) == 0o700
        password = config.core.database_password_file.read_text().strip()
        assert len(password) >= 40 and password not in config.core.database_url

        server = _serve(config, user)
        try:
            assert stat.S_IMODE((run / ".s.PGSQL.5432").stat().st_mode) == 0o700
            with psycopg.connect(config.core.database_url, autocommit=True) as conn:
                assert [r[0] for r in conn.execute("SELECT body FROM legacy_view ORDER BY 1")] == ["kept 1", "kept 2"]
                assert conn.execute("SELECT n FROM legacy_counts").fetchone() == (41,)
                role = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                                    "WHERE rolname = current_user").fetchone()
                assert role == (False, False, False)
                assert conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone() == ("postgres",)
                assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                                    "WHERE datname = 'appliance'").fetchone() == ("appliance",)
                left = conn.execute(
                    "SELECT count(*) FROM pg_class WHERE relowner = 10 AND relnamespace = 'public'::regnamespace "
                    "UNION ALL SELECT count(*) FROM pg_proc "
                    "WHERE proowner = 10 AND pronamespace = 'public'::regnamespace "
                    "UNION ALL SELECT count(*) FROM pg_type "
                    "WHERE typowner = 10 AND typnamespace = 'public'::regnamespace"
                ).fetchall()
                assert left == [(0,), (0,), (0,)], "every object of the application is its role's"
                conn.execute("INSERT INTO legacy_notes (body, mood) VALUES ('new', 'busy')")
                conn.execute("INSERT INTO legacy_counts (n) VALUES (legacy_double(21))")
                conn.execute("SELECT nextval('legacy_free')")
                conn.execute("CREATE TABLE after_upgrade (id int)")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("COPY legacy_notes (body) FROM PROGRAM 'id'")
            assert "password" in _refused(config.core.database_url.split("&passfile=")[0])
            assert "rejects connection" in _refused(f"postgresql:///appliance?host={run}&user=postgres&password=x")
        finally:
            server.send_signal(2)
            server.wait(15)
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)


def test_a_new_cluster_has_no_superuser_login_and_a_private_socket(keep_umask):
    """A first start: the superuser has no password, the application role owns only its database."""
    home = appliance_home()
    user = embedded.run_as_user()
    try:
        config = load_settings({"APPLIANCE_HOME": str(home)}, env_file=None)
        plan = plan_services(config, which=lambda _: None)
        make_dirs(config, plan)
        applied = migrate_database(config, plan)
        assert applied, "the migrations ran as the application role"
        assert oct(stat.S_IMODE(home.stat().st_mode)) == oct(0o711)
        server = _serve(config, user)
        try:
            with psycopg.connect(config.core.database_url, autocommit=True) as conn:
                assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("CREATE DATABASE another")
            run = config.core.run_dir
            assert "rejects connection" in _refused(f"postgresql:///postgres?host={run}&user=postgres&password=x")
            if user is not None:
                assert os.stat(config.core.run_dir).st_uid == os.stat(home / POSTGRES_DIR).st_uid != 0
        finally:
            server.send_signal(2)
            server.wait(15)
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
