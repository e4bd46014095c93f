"""The embedded PostgreSQL started for a moment, outside Supervisor: around the migrations of ``appliance run``,
for ``appliance backup`` while the appliance is stopped, and in the new cluster ``appliance restore`` builds.

The server listens on the usual socket in ``APPLIANCE_HOME/run``, so the configuration's ``DATABASE_URL``
reaches it; callers make sure nothing else serves that socket (``appliance run`` before supervisord starts,
backup and restore after checking that the appliance is stopped).
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.kernel.runtime.clients import connect_db, wait_for
from appliance.kernel.runtime.clock import SYSTEM
from appliance.supervise import embedded, pgaccess

log = logging.getLogger("appliance.run")

#: How long the temporary PostgreSQL gets to start or stop.
PG_START_TIMEOUT = 30.0
PG_STOP_TIMEOUT = 15.0


class StartupError(ApplianceError):
    """A step before supervisord failed; the message says which and why (no secrets)."""


def setup_cluster(config: Config, data: Path) -> list[str]:
    """Create the cluster in ``data`` if it does not exist, and bring its roles and authentication to
    ``appliance.supervise.pgaccess``'s rules (an old cluster is upgraded in place); returns what happened
    beyond the routine, for the log. The server must be stopped."""
    core = config.core
    user = embedded.run_as_user()
    changes = []
    try:
        if embedded.init_postgres(data, core.run_dir, user):
            changes.append(f"created the cluster in {data}")
        password_file = core.database_password_file
        assert password_file is not None, "the embedded database always has its password file"
        password = pgaccess.load_password(password_file, core.database_passfile)
        changes += pgaccess.secure_cluster(data, user, password)
    except (OSError, RuntimeError, subprocess.SubprocessError, ApplianceError) as exc:
        raise StartupError(f"could not set up the embedded PostgreSQL cluster in {data}: {_reason(exc)}") from None
    return changes


@contextmanager
def temporary_server(config: Config, data: Path) -> Iterator[None]:
    """The server on ``data`` from the moment it accepts the application role until the block ends; then a
    fast shutdown (it ends sessions and checkpoints, so the next start is clean)."""
    server = subprocess.Popen(embedded.postgres_argv(data, config.core.run_dir, embedded.run_as_user()),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _await_postmaster(data, server)
        wait_for_database(config, lambda: connect_db(config).close(), server)
        yield
    finally:
        _stop(server)


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


def wait_for_database(config: Config, probe, server: subprocess.Popen | None = None) -> None:
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


def _stop(server: subprocess.Popen) -> None:
    """SIGINT is PostgreSQL's fast shutdown."""
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
