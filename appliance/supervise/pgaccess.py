"""Who may use the embedded PostgreSQL: roles, password authentication and the generated password.

- The cluster's bootstrap superuser (``postgres``) has no password and ``pg_hba.conf`` rejects it, so nothing
  logs in as a superuser. ``appliance run`` does its administration in single-user mode (``postgres
  --single``: no socket, no authentication) while the server is stopped, before Supervisor starts it.
- The application role ``appliance`` is not a superuser: it owns the ``appliance`` database and every object
  in it, which is all the migrations need. A job that is tricked into running SQL cannot run programs
  (``COPY ... FROM PROGRAM``) or read files as the server's user.
- Every connection, on the unix socket or on loopback, authenticates with SCRAM-SHA-256. The password is
  generated at the first start (``secrets.token_urlsafe``) and kept in a 0600 file under
  ``APPLIANCE_HOME/secrets``, next to a libpq passfile with the same password, which the embedded
  ``DATABASE_URL`` names: no URL, command line or environment carries it, and the server is given only its
  SCRAM verifier, never the password.
- A cluster made by an earlier version (``trust`` authentication, ``appliance`` as the bootstrap superuser)
  is converted in place at the next start: the superuser is renamed ``postgres``, and a new non-superuser
  ``appliance`` takes over the database and every object in it. No data is touched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import re
import secrets
import subprocess
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.kernel.runtime.files import write_atomic
from appliance.supervise.embedded import PG_DATABASE, PG_SUPERUSER, PG_USER, as_user, find_pg_bin

#: SCRAM iterations; PostgreSQL's own default (``scram_iterations``).
SCRAM_ITERATIONS = 4096
#: Written on every start, so a hand edit that loosens it (``trust``) lasts until the next start only.
HBA = f"""\
# Written by `appliance run` at every start (appliance/supervise/pgaccess.py): edits here are replaced.
# The superuser never logs in (administration runs in single-user mode); everyone else proves the
# password with SCRAM, on the private unix socket or on loopback. Nothing else is accepted.
local   all   {PG_SUPERUSER}                  reject
host    all   {PG_SUPERUSER}   127.0.0.1/32   reject
host    all   {PG_SUPERUSER}   ::1/128        reject
local   all   all                    scram-sha-256
host    all   all        127.0.0.1/32   scram-sha-256
host    all   all        ::1/128        scram-sha-256
"""
_DATABASE_MARK = re.compile(r"appliance-database=(\d+)")


class ClusterSetupError(ApplianceError):
    """The single-user administration of the embedded cluster failed; the message has the server's words."""


def load_password(password_file: Path, passfile: Path) -> str:
    """The embedded PostgreSQL's password from ``password_file``, generated there at the first start; rewrites
    ``passfile`` (libpq's format: ``host:port:database:user:password``) to match. Both files are 0600 in a
    0700 directory. An operator rotates the password by replacing or deleting ``password_file``."""
    password_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    password_file.parent.chmod(0o700)
    try:
        password = password_file.read_text().strip()
    except FileNotFoundError:
        password = ""
    if not password:
        password = secrets.token_urlsafe(32)
        write_private(password_file, password + "\n")
    password_file.chmod(0o600)
    write_private(passfile, f"*:*:*:{PG_USER}:{_pgpass_escape(password)}\n")
    return password


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a full disk leaves the old file); 0600 from its first byte."""
    write_atomic(path, text, 0o600)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as ``pg_authid`` keeps
    it). ``ALTER ROLE ... PASSWORD`` takes it as is, so the password itself never reaches the server."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def single_user(data_dir: Path, user: str | None, database: str, sql: str) -> str:
    """Run ``sql`` (statements separated by blank lines) in single-user mode on ``database``; returns what
    the backend printed. Raises ``ClusterSetupError`` on the first error (``exit_on_error``). Statements are
    never echoed into the server's messages (``log_min_error_statement=panic``)."""
    argv = as_user([find_pg_bin("postgres"), "--single", "-D", str(data_dir), "-j",
                    "-c", "exit_on_error=on", "-c", "log_min_error_statement=panic", "-c", "lc_messages=C",
                    database], user)
    done = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if "ERROR" in line or "FATAL" in line]
        raise ClusterSetupError("; ".join(said)[-500:] or f"postgres --single exited with {done.returncode}")
    return done.stdout


def write_hba(data_dir: Path, user: str | None) -> None:
    path = data_dir / "pg_hba.conf"
    write_private(path, HBA)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def secure_cluster(data_dir: Path, user: str | None, password: str) -> list[str]:
    """Bring the stopped cluster in ``data_dir`` to the rules above; idempotent, run at every start. Returns
    what it changed beyond the routine (``upgraded``, ``created database``), for the log."""
    write_hba(data_dir, user)
    out = single_user(data_dir, user, "postgres", _roles_sql(scram_verifier(password)))
    upgraded = f"appliance-superuser={PG_USER}\"" in out
    changed = [f"upgraded (superuser {PG_USER} renamed {PG_SUPERUSER})"] if upgraded else []
    found = _DATABASE_MARK.search(out)
    if found is None:
        raise ClusterSetupError(f"could not tell whether database {PG_DATABASE} exists")
    if found.group(1) == "0":
        single_user(data_dir, user, "postgres", f'CREATE DATABASE "{PG_DATABASE}" OWNER "{PG_USER}"\n\n')
        changed.append("created database")
    else:
        single_user(data_dir, user, PG_DATABASE, _OWNERSHIP_SQL)
    return changed


def _roles_sql(verifier: str) -> str:
    """Roles, in the maintenance database: who the superuser is (an old cluster's is ``appliance``), its upgrade,
    the application role with its password verifier, the superuser without a password; then whether the
    database exists."""
    return f"""\
SELECT 'appliance-superuser=' || rolname FROM pg_roles WHERE oid = 10;

DO $$
BEGIN
  -- An earlier version made the application role the bootstrap superuser. Only another session user may
  -- rename it, so a temporary superuser does it and is dropped again by the renamed one.
  IF (SELECT rolname FROM pg_roles WHERE oid = 10) = '{PG_USER}' THEN
    CREATE ROLE appliance_upgrade SUPERUSER NOLOGIN;
    SET SESSION AUTHORIZATION appliance_upgrade;
    ALTER ROLE "{PG_USER}" RENAME TO "{PG_SUPERUSER}";
    SET SESSION AUTHORIZATION "{PG_SUPERUSER}";
    DROP ROLE appliance_upgrade;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') THEN
    CREATE ROLE "{PG_USER}";
  END IF;
  EXECUTE format('ALTER ROLE %I PASSWORD NULL', (SELECT rolname FROM pg_roles WHERE oid = 10));
  IF EXISTS (SELECT FROM pg_database WHERE datname = '{PG_DATABASE}') THEN
    ALTER DATABASE "{PG_DATABASE}" OWNER TO "{PG_USER}";
  END IF;
END $$;

ALTER ROLE "{PG_USER}" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD '{verifier}';

SELECT 'appliance-database=' || count(*) FROM pg_database WHERE datname = '{PG_DATABASE}';

"""


#: In the application database: every object the bootstrap superuser (oid 10) owns outside the system
#: schemas goes to the application role. Tables first: their indexes, triggers, row types and the sequences
#: of their serial and identity columns follow them (and cannot be moved on their own).
_OWNERSHIP_SQL = f"""\
DO $$
DECLARE
  item record;
BEGIN
  FOR item IN SELECT n.nspname FROM pg_namespace n
              WHERE n.nspowner = 10 AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', item.nspname, '{PG_USER}');
  END LOOP;
  FOR item IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relowner = 10 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I',
                   CASE item.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                   item.name, '{PG_USER}');
  END LOOP;
  FOR item IN SELECT c.oid::regclass AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relowner = 10 AND c.relkind = 'S'
                AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', item.name, '{PG_USER}');
  END LOOP;
  FOR item IN SELECT p.oid::regprocedure AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE p.proowner = 10 AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', item.name, '{PG_USER}');
  END LOOP;
  FOR item IN SELECT t.oid::regtype AS name, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE t.typowner = 10 AND t.typtype IN ('c', 'd', 'e', 'r') AND t.typelem = 0
                AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
                AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I', CASE item.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                   item.name, '{PG_USER}');
  END LOOP;
END $$;

"""
