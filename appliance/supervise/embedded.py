"""Embedded Redis and PostgreSQL: the command lines that run them on unix sockets under a directory of ours.

Used by ``appliance run`` (as Supervisor programs) and by the test fixtures, so both start them the same way.
PostgreSQL refuses to run as root; when we are root, its commands run as the ``postgres`` user and its
directories are given to that user.

Both listen on a unix socket only (no TCP port), in a 0700 directory, and the sockets themselves are 0700:
only the appliance's own user (and root) can reach them. Who may log in to PostgreSQL, and how, is
``appliance.supervise.pgaccess``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

REDIS_SOCKET = "redis.sock"
PG_DATABASE = "appliance"
#: The application role: owns its database, is not a superuser.
PG_USER = "appliance"
#: The cluster's bootstrap superuser: no password, rejected by pg_hba.conf (see ``appliance.supervise.pgaccess``).
PG_SUPERUSER = "postgres"
#: Only the socket's owner may connect (PostgreSQL's default is 0777, relying on the directory alone).
SOCKET_MODE = "0700"


def find_pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``postgres``, ``pg_ctl``), newest version first."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key, reverse=True)
    found = candidates[0] if candidates else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"PostgreSQL's {name} was not found (install the postgresql package)")
    return found


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parts[4])
    except (IndexError, ValueError):
        return 0.0


def run_as_user() -> str | None:
    """The user PostgreSQL runs as when we are root (it refuses root); None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no 'postgres' user exists to run PostgreSQL")


def as_user(argv: list[str], user: str | None) -> list[str]:
    return argv if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]


def give_to(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def redis_argv(data_dir: Path, socket_dir: Path, port: int = 0) -> list[str]:
    """``redis-server`` on a unix socket (mode 700 directory) with append-only persistence in ``data_dir``,
    never evicting a key (a lease evicted under its holder is what fencing must then catch)."""
    return [
        shutil.which("redis-server") or "redis-server",
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--unixsocket", str(socket_dir / REDIS_SOCKET),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--save", "",
        "--maxmemory-policy", "noeviction",
        "--daemonize", "no",
        "--logfile", "",
    ]


def private_dir(path: Path, user: str | None = None) -> None:
    """``path`` created if missing, mode 0700, owned by ``user`` when given (not recursive: files already
    inside keep their owners)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def init_postgres(data_dir: Path, socket_dir: Path, user: str | None) -> bool:
    """Create the cluster in ``data_dir`` if it does not exist yet; True when it was created.

    ``socket_dir`` becomes a 0700 directory of PostgreSQL's user. The new cluster rejects every connection
    until ``appliance.supervise.pgaccess.secure_cluster`` has set its roles, password and ``pg_hba.conf``.
    """
    private_dir(socket_dir, user)
    if (data_dir / "PG_VERSION").exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    give_to(data_dir, user)
    subprocess.run(
        as_user([find_pg_bin("initdb"), "-D", str(data_dir), "-U", PG_SUPERUSER, "--auth=reject",
                 "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"], user),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return True


def postgres_argv(data_dir: Path, socket_dir: Path, user: str | None, port: int = 5432, listen: str = "") -> list[str]:
    """The ``postgres`` server in the foreground, listening on a unix socket in ``socket_dir`` only
    (``listen`` empty) or also on a loopback address."""
    return as_user([
        find_pg_bin("postgres"), "-D", str(data_dir),
        "-k", str(socket_dir), "-p", str(port),
        "-c", f"listen_addresses={listen}",
        "-c", f"unix_socket_permissions={SOCKET_MODE}",
        "-c", "password_encryption=scram-sha-256",
        "-c", "fsync=on", "-c", "max_connections=100",
    ], user)


def postgres_url(socket_dir: Path, passfile: Path, port: int = 5432, database: str = PG_DATABASE) -> str:
    """The application role's URL on the unix socket; the password comes from libpq's ``passfile``."""
    return f"postgresql:///{database}?host={socket_dir}&port={port}&user={PG_USER}&passfile={passfile}"
