"""``appliance redis-cli`` and ``appliance supervisorctl``: the operator's own tools, pointed at this appliance.

The runbook says ``redis-cli GET lock:NAME``; a bare ``redis-cli`` reaches whatever Redis listens on
localhost:6379, not the appliance's (its embedded Redis listens only on ``$APPLIANCE_HOME/run/redis.sock``).
``appliance redis-cli ARGS`` runs the real ``redis-cli`` against the Redis the appliance uses: ``-s SOCKET``
for the embedded one (no TCP port is opened), ``-h/-p/-n``, ``--user``, ``--tls`` and certificates for
``REDIS_URL`` (a Sentinel URL is resolved to the current master). The password travels in the
``REDISCLI_AUTH`` environment variable, never on a command line (visible to every user in ``ps``). Arguments
that choose a server themselves (``-h``, ``-s``, ``-u``...) are passed through untouched.

``appliance supervisorctl ARGS`` runs supervisorctl with ``-c`` naming the appliance's ``supervisord.conf``
and the ``APPLIANCE_HOME`` whose socket it reads, from any directory.

Which appliance: an exported ``APPLIANCE_HOME`` (and the rest of the environment) wins; otherwise, in a
source checkout, the checkout's ``.env`` and ``./data``, the ones ``./scripts/run`` uses; otherwise (the image)
the current directory's. ``scripts/wrappers/`` holds the ``redis-cli`` and ``supervisorctl`` scripts that
``scripts/install`` puts in ``.venv/bin`` (and the image in ``/opt/venv/bin``) so the bare names work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from appliance.config import Config, pin_home, set_process_env
from appliance.kernel.runtime.clients import make_redis
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail
from appliance.kernel.runtime.startup import config_or_exit
from appliance.supervise.plan import INSTALLED_SUPERVISOR_CONF, REPO, locate

#: redis-cli options that pick the server or the credentials: given any of them, nothing is added.
TARGET_FLAGS = {"-h", "-p", "-s", "-u", "-a", "-n", "--user", "--pass", "--askpass", "--tls", "--sni", "--cacert",
                "--cacertdir", "--cert", "--key"}
ELF = b"\x7fELF"


def register(sub: argparse._SubParsersAction) -> None:
    for name, summary, handler in (
        ("redis-cli", "redis-cli against this appliance's Redis (embedded socket or REDIS_URL)", redis_cli_command),
        ("supervisorctl", "supervisorctl for this appliance, from any directory", supervisorctl_command),
    ):
        # No option of its own ('+' is no redis-cli or supervisorctl prefix): every word, -h included, is the
        # tool's.
        parser = sub.add_parser(name, help=summary, description=summary, add_help=False, prefix_chars="+")
        parser.add_argument("args", nargs=argparse.REMAINDER, help=f"{name}'s own arguments")
        parser.set_defaults(handler=handler)


def appliance_config() -> Config:
    """The configuration of the appliance this command is about (see the module's docstring)."""
    here = os.getcwd()
    pin_home()
    if (REPO / "supervisord.conf").is_file():
        os.chdir(REPO)
    try:
        return config_or_exit()
    finally:
        os.chdir(here)


def connection_args(client: Any) -> tuple[list[str], dict[str, str]]:
    """redis-cli's options and environment for the server a redis-py client is configured for."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    args: list[str] = []
    if hasattr(pool, "get_master_address"):
        host, port = pool.get_master_address()
        args += ["-h", str(host), "-p", str(port)]
    elif "path" in kwargs:
        args += ["-s", str(kwargs["path"])]
    else:
        args += ["-h", str(kwargs.get("host", "localhost")), "-p", str(kwargs.get("port", 6379))]
    if kwargs.get("db"):
        args += ["-n", str(kwargs["db"])]
    if kwargs.get("username"):
        args += ["--user", str(kwargs["username"])]
    if "ssl" in getattr(pool.connection_class, "__name__", "").lower() or kwargs.get("ssl"):
        args.append("--tls")
        for option, flag in (("ssl_ca_certs", "--cacert"), ("ssl_certfile", "--cert"), ("ssl_keyfile", "--key")):
            if kwargs.get(option):
                args += [flag, str(kwargs[option])]
    env = {"REDISCLI_AUTH": str(kwargs["password"])} if kwargs.get("password") else {}
    return args, env


def real_redis_cli(path: str | None = None) -> str | None:
    """The first ``redis-cli`` on PATH that is a program, not a script such as the wrappers of this project."""
    for directory in (path.split(os.pathsep) if path is not None else os.get_exec_path()):
        candidate = Path(directory or ".") / "redis-cli"
        try:
            with open(candidate, "rb") as handle:
                if handle.read(4) == ELF and os.access(candidate, os.X_OK):
                    return str(candidate)
        except OSError:
            continue
    return None


def redis_cli_command(args: argparse.Namespace) -> int:
    program = real_redis_cli()
    if program is None:
        fail("redis-cli is not installed (Debian: apt-get install redis-tools)")
    given = list(args.args)
    if any(word in TARGET_FLAGS or word.startswith(("--user=", "--pass=")) for word in given):
        os.execv(program, [program, *given])
    config = appliance_config()
    try:
        client = make_redis(config.core.redis_url)
        target, env = connection_args(client)
    except Exception as exc:  # noqa: BLE001 - a Sentinel that cannot be asked is one clear line, no traceback
        fail(f"cannot find the appliance's Redis: {type(exc).__name__}: {exc}")
    for name, value in env.items():
        set_process_env(name, value)
    os.execv(program, [program, *target, *given])


def supervisorctl_command(args: argparse.Namespace) -> int:
    config = appliance_config()
    conf = locate(REPO / "supervisord.conf", INSTALLED_SUPERVISOR_CONF)
    if not conf.is_file():
        fail(f"no supervisord.conf found (looked for {REPO / 'supervisord.conf'} and {INSTALLED_SUPERVISOR_CONF})",
             ExitCode.CONFIG)
    set_process_env("APPLIANCE_HOME", str(config.core.home))
    argv = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args.args]
    os.execv(argv[0], argv)


def redis_cli_hint() -> str:
    """The command an operator types for the runbook's ``redis-cli GET lock:NAME`` (``appliance run`` prints it)."""
    wrapper = Path(sys.executable).with_name("redis-cli")
    if not wrapper.is_file():
        return "appliance redis-cli GET lock:NAME"
    if shutil.which("redis-cli") == str(wrapper):
        return "redis-cli GET lock:NAME"
    try:
        shown = os.path.relpath(wrapper)
    except ValueError:
        shown = str(wrapper)
    return f"{shown if not shown.startswith('..') else wrapper} GET lock:NAME"
