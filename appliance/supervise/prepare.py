"""Everything ``appliance run`` does before supervisord starts: private directories and log files, the
embedded PostgreSQL cluster and its access rules, and the database migrations.

Migrations run here, before any program starts, so the worker never runs a job against an old schema.
They hold PostgreSQL's advisory lock (``appliance.kernel.protocol.db.migrate``), so replicas starting together
apply each migration once. With the embedded PostgreSQL, the server is started just long enough to create the
database and migrate, then stopped again (fast shutdown) and handed to Supervisor's ``postgres`` program.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import psycopg

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.kernel.protocol.db.migrate import migrate
from appliance.kernel.runtime.clients import connect_db
from appliance.supervise import embedded, pgversion
from appliance.supervise.pgserver import StartupError, setup_cluster, temporary_server, wait_for_database
from appliance.supervise.plan import (
    LOG_FILES,
    POSTGRES_DIR,
    QDRANT_SERVER_DIR,
    REDIS_DIR,
    SUPERVISORD_LOG,
    Plan,
    qdrant_dirs,
)

log = logging.getLogger("appliance.run")

__all__ = ["FATAL_MARKER", "StartupError", "fatal_marker", "make_dirs", "make_home", "migrate_database"]

#: Name of the file the FATAL listener writes under the run directory (see ``appliance.supervise.fatal``).
FATAL_MARKER = "fatal.json"

def make_home(config: Config) -> None:
    """``APPLIANCE_HOME`` created if missing: traversable, not listable (0711). PostgreSQL's own user must reach
    its data and socket directories when the appliance runs as root; everything inside is private by its own
    mode. Whatever starts first in a new home (a restore's Qdrant server) must not make it 0700."""
    home = config.core.home
    if not home.exists():
        home.mkdir(parents=True)
        home.chmod(0o711)


def make_dirs(config: Config, plan: Plan) -> None:
    """Data, run, log and metrics directories, and every program's log file (so the ``logs`` program
    follows them all from the first line). Removes a FATAL marker left by the previous run.

    From here on this process, supervisord (which it becomes) and every program create files with umask
    077: logs, sockets, Redis's append-only file, metrics and Qdrant's storage are the appliance user's
    alone. supervisord's own ``umask`` setting would not do it: it applies only when supervisord daemonizes.
    Directories and log files of an earlier version, made with the usual 022, are tightened too.
    """
    os.umask(0o077)
    core = config.core
    make_home(config)
    for path in (core.run_dir, core.log_dir, core.metrics_dir, core.home / REDIS_DIR, core.secrets_dir):
        embedded.private_dir(path)
    for path in (core.qdrant_path, core.home / QDRANT_SERVER_DIR):
        if path.is_dir():
            path.chmod(0o700)
    if plan.qdrant == "server":
        for path in qdrant_dirs(core.home):
            path.mkdir(parents=True, exist_ok=True)
    for name in (*LOG_FILES, SUPERVISORD_LOG):
        (core.log_dir / name).touch()
    for path in core.log_dir.iterdir():
        if path.is_file():
            path.chmod(0o600)
    (core.run_dir / FATAL_MARKER).unlink(missing_ok=True)


def migrate_database(config: Config, plan: Plan) -> list[str]:
    """Apply pending migrations; returns their names. Starts and stops the embedded server when needed,
    after creating its cluster (first start) and bringing its roles and authentication to
    ``appliance.supervise.pgaccess``'s rules (every start; an old cluster is upgraded in place).

    Raises ``MajorVersionMismatch`` before anything starts when the embedded data directory was written by
    another PostgreSQL major version."""
    if not plan.postgres_embedded:
        return _migrate(config)
    data = config.core.home / POSTGRES_DIR
    try:
        pgversion.check_data_dir(data)
    except pgversion.MajorVersionMismatch:
        raise
    except (OSError, subprocess.SubprocessError, ApplianceError) as exc:
        raise StartupError(f"could not tell which PostgreSQL wrote {data}: {exc}") from None
    for change in setup_cluster(config, data):
        log.info("embedded PostgreSQL: %s", change)
    with temporary_server(config, data):
        return _migrate(config)


def _migrate(config: Config) -> list[str]:
    wait_for_database(config, lambda: connect_db(config).close())
    try:
        with connect_db(config) as conn:
            applied = migrate(conn)
    except (psycopg.Error, ApplianceError) as exc:
        raise StartupError(f"database migration failed: {type(exc).__name__}: {exc}") from None
    return [f"{m.version:04d}_{m.name}" for m in applied]


def fatal_marker(run_dir: Path) -> Path:
    return run_dir / FATAL_MARKER
