"""Everything ``appliance run`` does before supervisord starts: private directories and log files, the
embedded PostgreSQL cluster and its access rules, and the database migrations.

Migrations run here, before any program starts, so the worker never runs a job against an old schema.
They hold PostgreSQL's advisory lock (``appliance.kernel.db.migrate``), so replicas starting together apply each
migration once. With the embedded PostgreSQL, the server is started just long enough to create the
database and migrate, then stopped again (fast shutdown) and handed to Supervisor's ``postgres`` program.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import psycopg

from appliance.config import Config
from appliance.kernel.clients import connect_db, wait_for
from appliance.kernel.clock import SYSTEM
from appliance.kernel.db.migrate import migrate
from appliance.kernel.errors import ApplianceError
from appliance.kernel.logs import fields
from appliance.supervise import embedded, pgaccess
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

#: Name of the file the FATAL listener writes under the run directory (see ``appliance.supervise.fatal``).
FATAL_MARKER = "fatal.json"
#: How long the temporary PostgreSQL gets to start or stop around the migrations.
PG_START_TIMEOUT = 30.0
PG_STOP_TIMEOUT = 15.0


class StartupError(ApplianceError):
    """A step before supervisord failed; the message says which and why (no secrets)."""


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
    if not core.home.exists():
        core.home.mkdir(parents=True)
        # Traversable, not listable: PostgreSQL's own user must reach its data and socket directories when
        # the appliance runs as root; everything inside is private by its own mode.
        core.home.chmod(0o711)
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
    ``appliance.supervise.pgaccess``'s rules (every start; an old cluster is upgraded in place)."""
    if not plan.postgres_embedded:
        return _migrate(config)
    core = config.core
    user = embedded.run_as_user()
    data = core.home / POSTGRES_DIR
    try:
        if embedded.init_postgres(data, core.run_dir, user):
            log.info("created the embedded PostgreSQL cluster", extra=fields(path=str(data)))
        password_file = core.database_password_file
        assert password_file is not None, "the embedded database always has its password file"
        password = pgaccess.load_password(password_file, core.database_passfile)
        for change in pgaccess.secure_cluster(data, user, password):
            log.info("embedded PostgreSQL: %s", change)
    except (OSError, RuntimeError, subprocess.SubprocessError, ApplianceError) as exc:
        raise StartupError(f"could not set up the embedded PostgreSQL cluster in {data}: {_reason(exc)}") from None
    server = subprocess.Popen(embedded.postgres_argv(data, core.run_dir, user),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _await_postmaster(data, server)
        _wait_for_database(config, lambda: connect_db(config).close(), server)
        return _migrate(config)
    finally:
        _stop_postgres(server)


def _migrate(config: Config) -> list[str]:
    _wait_for_database(config, lambda: connect_db(config).close())
    try:
        with connect_db(config) as conn:
            applied = migrate(conn)
    except (psycopg.Error, ApplianceError) as exc:
        raise StartupError(f"database migration failed: {type(exc).__name__}: {exc}") from None
    return [f"{m.version:04d}_{m.name}" for m in applied]


def _await_postmaster(data: Path, server: subprocess.Popen, timeout: float = PG_START_TIMEOUT) -> None:
    """Wait, quietly, until the server just started says it accepts connections (``postmaster.pid``'s status
    line reads ``ready``, what ``pg_ctl -w`` waits for) or exits. Probing earlier only meets a socket that
    does not exist yet, a warning at every start that an operator reads as a fault."""
    deadline = SYSTEM.monotonic() + timeout
    while server.poll() is None and SYSTEM.monotonic() < deadline:
        try:
            lines = (data / "postmaster.pid").read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) > 7 and lines[7].strip() == "ready":
            return
        SYSTEM.sleep(0.05)


def _wait_for_database(config: Config, probe, server: subprocess.Popen | None = None) -> None:
    """Wait for ``probe`` to succeed; with ``server`` (the temporary embedded PostgreSQL), stop waiting at
    once when it exits, and report its last words."""
    def check() -> None:
        if server is None or server.poll() is None:
            probe()

    timeout = PG_START_TIMEOUT if server is not None else config.core.startup_wait
    up = wait_for("PostgreSQL", check, timeout, log, interval=0.2)
    if server is not None and server.poll() is not None:
        said = server.stderr.read().decode(errors="replace")[-500:] if server.stderr else ""
        raise StartupError(f"the embedded PostgreSQL exited at start: {said.strip()}")
    if not up:
        raise StartupError(f"PostgreSQL was not reachable within {timeout:.0f}s")


def _stop_postgres(server: subprocess.Popen) -> None:
    """SIGINT is PostgreSQL's fast shutdown: it ends sessions and checkpoints, so the next start is clean."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(PG_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if server.stderr is not None:
        server.stderr.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
        return exc.stderr.decode(errors="replace").strip()[-500:]
    return f"{type(exc).__name__}: {exc}"


def fatal_marker(run_dir: Path) -> Path:
    return run_dir / FATAL_MARKER
