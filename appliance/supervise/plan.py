"""Which services the appliance runs itself, and the environment that tells ``supervisord.conf`` so.

``supervisord.conf`` is static; everything that depends on the configuration reaches it as ``%(ENV_X)s``
expansions of the variables ``supervisor_env`` returns (``appliance run`` exports them before it starts
supervisord, and every program inherits them).

Services:

- Redis and PostgreSQL are embedded (programs ``redis`` and ``postgres`` on unix sockets under
  ``APPLIANCE_HOME/run``, defined in ``config/supervisor/*.conf``) exactly when ``REDIS_URL`` /
  ``DATABASE_URL`` are not set; otherwise those programs are not defined at all.
- Qdrant is ``server`` (program ``qdrant`` supervised here) when a Qdrant binary exists (``QDRANT_BIN`` or
  ``qdrant`` on ``PATH``: the image bundles one, ``scripts/install`` puts the pinned release in ``.venv/bin``
  and ``scripts/run`` adds that to ``PATH``) and ``QDRANT_URL`` is unset or names this machine; ``external``
  when ``QDRANT_URL`` names another host; otherwise ``embedded``: Qdrant Edge inside the process that uses
  the knowledge base, and the ``qdrant`` program stays stopped.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from appliance.config import Config
from appliance.errors import ConfigError
from appliance.supervise import embedded
from appliance.supervise.launch import ROOM_OPTION, SECRET_NAMES

#: Root of a source checkout (``supervisord.conf`` and ``config/`` live there); absent in an installed package.
REPO = Path(__file__).resolve().parents[2]
#: Where the image keeps the files that a checkout keeps in its root (``Dockerfile.worker`` copies them).
INSTALLED_SUPERVISOR_CONF = Path("/etc/supervisor/supervisord.conf")
INSTALLED_QDRANT_CONF = Path("/etc/qdrant/config.yaml")
INSTALLED_PROGRAMS = Path("/etc/supervisor/conf.d")
#: The image's Qdrant volume (seed 004); on a host the server's storage lives under ``APPLIANCE_HOME``.
IMAGE_QDRANT_STORAGE = Path("/qdrant/storage")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
QDRANT_DEFAULT_PORT = 6333

#: Every program's log files, relative to the log directory (seed 004's names; created before supervisord
#: starts so the ``logs`` program can follow all of them from the first line).
PROGRAMS = ("redis", "postgres", "qdrant", "worker", "sidecar")
LOG_FILES = tuple(f"{name}{suffix}.log" for name in PROGRAMS for suffix in ("", "-error"))
#: What the FATAL listener treats as critical: any of them FATAL leaves the appliance half-broken.
CRITICAL = PROGRAMS
#: supervisord's own log (``[supervisord] logfile``), in the same directory.
SUPERVISORD_LOG = "supervisord.log"
#: Directories of the embedded servers' data under ``APPLIANCE_HOME``.
REDIS_DIR = "redis"
POSTGRES_DIR = "postgres"
QDRANT_SERVER_DIR = "qdrant-server"


@dataclass(frozen=True)
class Plan:
    """The decisions ``appliance run`` made; ``qdrant`` is ``server``, ``external`` or ``embedded``."""

    redis_embedded: bool
    postgres_embedded: bool
    qdrant: str
    qdrant_bin: str | None
    qdrant_url: str
    supervisor_conf: Path
    qdrant_conf: Path

    @property
    def includes(self) -> tuple[Path, ...]:
        """The embedded programs' files that ``supervisord.conf``'s ``[include]`` reads (only those used)."""
        names = [name for name, used in (("redis", self.redis_embedded), ("postgres", self.postgres_embedded)) if used]
        return tuple(locate(REPO / "config" / "supervisor" / f"{n}.conf", INSTALLED_PROGRAMS / f"{n}.conf")
                     for n in names)

    def describe(self) -> dict[str, str]:
        return {
            "redis": "embedded" if self.redis_embedded else "external",
            "postgres": "embedded" if self.postgres_embedded else "external",
            "qdrant": self.qdrant,
        }


def locate(checkout: Path, installed: Path) -> Path:
    """``checkout`` when running from a source tree, else the image's ``installed`` copy."""
    return checkout if checkout.is_file() else installed


def find_qdrant(configured: str, which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The Qdrant binary: ``QDRANT_BIN`` (a path or a name on ``PATH``) or ``qdrant`` on ``PATH``.

    Raises ``ConfigError`` when ``QDRANT_BIN`` is set but names nothing executable: a typo there must not
    silently fall back to embedded mode.
    """
    if not configured:
        return which("qdrant")
    found = configured if os.sep in configured else which(configured)
    if not found or not os.access(found, os.X_OK) or not Path(found).is_file():
        raise ConfigError([f"QDRANT_BIN={configured}: expected an executable Qdrant server binary"])
    return str(Path(found).absolute())


def plan_services(config: Config, which: Callable[[str], str | None] = shutil.which) -> Plan:
    core = config.core
    binary = find_qdrant(core.qdrant_bin, which)
    url_host = urlsplit(core.qdrant_url).hostname or ""
    if binary and (not core.qdrant_url_set or url_host in LOOPBACK_HOSTS):
        mode = "server"
    elif core.qdrant_url_set:
        mode = "external"
    else:
        mode = "embedded"
    url = core.qdrant_url if core.qdrant_url_set else f"http://127.0.0.1:{QDRANT_DEFAULT_PORT}"
    return Plan(
        redis_embedded=core.redis_embedded,
        postgres_embedded=core.database_embedded,
        qdrant=mode,
        qdrant_bin=binary if mode == "server" else None,
        qdrant_url=url,
        supervisor_conf=locate(REPO / "supervisord.conf", INSTALLED_SUPERVISOR_CONF),
        qdrant_conf=locate(REPO / "config" / "qdrant.yaml", INSTALLED_QDRANT_CONF),
    )


def stop_wait(config: Config) -> int:
    """supervisord's ``stopwaitsecs`` for the worker: ``SHUTDOWN_TIMEOUT`` rounded up. The worker keeps its
    whole stop within ``SHUTDOWN_TIMEOUT`` by itself (``appliance.worker.main.run_window``), so the SIGKILL
    only ends a worker that cannot run Python any more (a job holding the GIL)."""
    return math.ceil(config.core.shutdown_timeout)


def sidecar_stop_wait(config: Config) -> int:
    """supervisord's ``stopwaitsecs`` for the sidecar: gunicorn's graceful timeout plus one second."""
    from appliance.sidecar.server import graceful_timeout  # gunicorn: only where the plan is made, not for CLI tools

    return graceful_timeout(config) + 1


def qdrant_dirs(home: Path) -> tuple[Path, Path]:
    """(storage, snapshots) of the supervised Qdrant server."""
    if IMAGE_QDRANT_STORAGE.is_dir():
        return IMAGE_QDRANT_STORAGE, IMAGE_QDRANT_STORAGE.parent / "snapshots"
    return home / QDRANT_SERVER_DIR / "storage", home / QDRANT_SERVER_DIR / "snapshots"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def supervisor_env(config: Config, plan: Plan, python: str = sys.executable) -> dict[str, str]:
    """The variables ``supervisord.conf`` expands, plus those the supervised Qdrant reads
    (``QDRANT__SECTION__KEY`` overrides of ``config/qdrant.yaml``). Pure: nothing is exported here."""
    core = config.core
    pg_user = embedded.run_as_user() if plan.postgres_embedded else None
    launcher = [python, "-m", "appliance.supervise.launch"]
    env = {
        "APPLIANCE_HOME": str(core.home),
        "APPLIANCE_PYTHON": python,
        # Every program starts through the launcher, which gives it only its share of the environment.
        "APPLIANCE_LAUNCH": shlex.join(launcher),
        SECRET_NAMES: ",".join(sorted(config.secret_names)),
        "APPLIANCE_STOP_WAIT": str(stop_wait(config)),
        "APPLIANCE_SIDECAR_STOP_WAIT": str(sidecar_stop_wait(config)),
        "APPLIANCE_SUPERVISOR_INCLUDES": " ".join(str(path) for path in plan.includes),
        "APPLIANCE_REDIS_COMMAND": shlex.join([*_storage(launcher, core.home / REDIS_DIR), "redis", "--",
                                               *embedded.redis_argv(core.home / REDIS_DIR, core.run_dir)]),
        "APPLIANCE_POSTGRES_COMMAND": shlex.join([*_storage(launcher, core.home / POSTGRES_DIR), "postgres", "--",
                                                  *embedded.postgres_argv(core.home / POSTGRES_DIR, core.run_dir,
                                                                          pg_user)])
        if plan.postgres_embedded else "postgres",
        "APPLIANCE_QDRANT_AUTOSTART": _flag(plan.qdrant == "server"),
        "APPLIANCE_QDRANT_COMMAND": shlex.join([*_storage(launcher, qdrant_dirs(core.home)[0]), "qdrant", "--",
                                                plan.qdrant_bin or "qdrant", "--config-path", str(plan.qdrant_conf)]),
        "APPLIANCE_CRITICAL": ",".join(CRITICAL),
    }
    if plan.qdrant == "server":
        env.update(qdrant_server_env(config, plan))
    return env


def _storage(launcher: list[str], data: Path) -> list[str]:
    """The launcher of a program that keeps its data in ``data``: it starts only once that filesystem has room
    to start (``appliance.supervise.headroom``), so a full disk never makes it FATAL."""
    return [*launcher, ROOM_OPTION, str(data)]


def qdrant_server_env(config: Config, plan: Plan) -> dict[str, str]:
    """What the supervised Qdrant server reads: its URL, ports, storage and API key (``QDRANT__*``)."""
    port = urlsplit(plan.qdrant_url).port or QDRANT_DEFAULT_PORT
    storage, snapshots = qdrant_dirs(config.core.home)
    env = {
        "QDRANT_URL": plan.qdrant_url,
        "QDRANT__SERVICE__HTTP_PORT": str(port),
        # The same setting the knowledge store's client dials (QDRANT_GRPC_PORT, default 6334).
        "QDRANT__SERVICE__GRPC_PORT": str(config.core.qdrant_grpc_port),
        "QDRANT__STORAGE__STORAGE_PATH": str(storage),
        "QDRANT__STORAGE__SNAPSHOTS_PATH": str(snapshots),
    }
    if not IMAGE_QDRANT_STORAGE.is_dir():
        # On a host, loopback only: config/qdrant.yaml listens on every interface for the container's
        # published ports, but a developer's machine must not serve the knowledge base to its network.
        env["QDRANT__SERVICE__HOST"] = "127.0.0.1"
    if config.core.qdrant_api_key:
        env["QDRANT__SERVICE__API_KEY"] = config.core.qdrant_api_key
    return env
