"""``python -m appliance.supervise.launch PROGRAM -- COMMAND...``: start a supervised program with only the
environment it needs.

supervisord hands its whole environment to every program, and that environment holds every secret the
operator gave the appliance. A program's environment is readable in ``/proc/PID/environ`` by its own user,
and the embedded PostgreSQL runs as a user of its own. So every ``command=`` of ``supervisord.conf`` goes
through this launcher, which keeps what ``PROGRAMS`` allows and ``exec``s the command: the program keeps
the launcher's pid, so supervisord signals and waits on the program itself.

Why a launcher rather than ``env -i NAME=value ... COMMAND`` in ``supervisord.conf``: values written on a
command line are readable by every local user in ``/proc/PID/cmdline``, and the values are only known when
the program starts; names alone are safe to write down, and here they are data a test can check.

- ``redis``, ``postgres``, ``logs``, ``fatal``: only ``BASE`` (locale, ``PATH``, ...), no secret at all;
- ``qdrant``: ``BASE`` and its ``QDRANT__*`` overrides, among them its own API key when one is set (the
  server needs it to check requests), no application secret;
- ``worker``: everything but the secrets only the sidecar uses;
- ``sidecar``: everything but the declared secrets it does not use (the service URLs, which it connects
  to, are kept: they are not declared secrets).

The declared secrets come from ``APPLIANCE_SECRET_NAMES``, which ``appliance run`` exports from the
configuration (names only). A secret withheld from a program that the operator did set is named in
``APPLIANCE_WITHHELD_SECRETS``: the program's configuration then knows it is set without its value (the
sidecar's ``/health`` still tells which embedder the worker uses).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.config import process_environment
from appliance.kernel.runtime.exits import ExitCode
from appliance.supervise.headroom import wait_for_room

SECRET_NAMES = "APPLIANCE_SECRET_NAMES"
#: ``--room DIR``: wait until DIR's filesystem is not full before starting (``appliance.supervise.headroom``).
ROOM_OPTION = "--room"
WITHHELD = "APPLIANCE_WITHHELD_SECRETS"
#: What every program may see: how to find programs and libraries, the locale, the time zone, and
#: supervisord's own SUPERVISOR_* variables (the listener protocol relies on them). APPLIANCE_HOME is no
#: secret; it tells which appliance a process belongs to.
BASE_NAMES = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "APPLIANCE_HOME"})
BASE_PREFIXES = ("LC_", "SUPERVISOR_")
#: The supervised Qdrant's settings (``appliance.supervise.plan``); applications never need them.
QDRANT_PREFIX = "QDRANT__"


@dataclass(frozen=True)
class Policy:
    """``allow``: only these names and prefixes (services). Otherwise the whole environment less
    ``deny_prefixes`` and less the declared secrets not kept: ``keep`` when given, else all but ``drop``."""

    allow: frozenset[str] | None = None
    allow_prefixes: tuple[str, ...] = ()
    keep: frozenset[str] | None = None
    drop: frozenset[str] = frozenset()
    deny_prefixes: tuple[str, ...] = ()


SERVICE = Policy(allow=BASE_NAMES, allow_prefixes=BASE_PREFIXES)
#: The secrets only the sidecar uses: its admin credentials.
ADMIN_SECRETS = frozenset({"ADMIN_TOKEN", "JWT_SECRET"})
#: The OTLP exporter's headers (a collector's credentials), for every program that exports traces.
TRACE_EXPORT_SECRETS = frozenset({"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"})
PROGRAMS: dict[str, Policy] = {
    "redis": SERVICE,
    "postgres": SERVICE,
    "logs": SERVICE,
    "fatal": SERVICE,
    "qdrant": Policy(allow=BASE_NAMES, allow_prefixes=(*BASE_PREFIXES, QDRANT_PREFIX)),
    # Jobs may need any secret (a custom job's too), except the admin credentials.
    "worker": Policy(drop=ADMIN_SECRETS, deny_prefixes=(QDRANT_PREFIX,)),
    # Its admin credentials, the Qdrant API key its readiness check sends and the trace exporter's headers (it
    # exports its requests' spans); not the providers' keys.
    "sidecar": Policy(keep=ADMIN_SECRETS | TRACE_EXPORT_SECRETS | {"QDRANT_API_KEY"}, deny_prefixes=(QDRANT_PREFIX,)),
}


def program_env(program: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment ``program`` starts with. Raises ``KeyError`` for an unknown program."""
    policy = PROGRAMS[program]
    if policy.allow is not None:
        return {k: v for k, v in environ.items() if k in policy.allow or k.startswith(policy.allow_prefixes)}
    declared = {n for n in environ.get(SECRET_NAMES, "").split(",") if n}
    dropped = declared - policy.keep if policy.keep is not None else declared & policy.drop
    env = {k: v for k, v in environ.items()
           if k not in dropped and k.removesuffix("_FILE") not in dropped
           and not k.startswith(policy.deny_prefixes) and k not in (SECRET_NAMES, WITHHELD)}
    withheld = sorted(n for n in dropped if environ.get(n) or environ.get(f"{n}_FILE"))
    if withheld:
        env[WITHHELD] = ",".join(withheld)
    return env


def main(argv: list[str]) -> int:
    room = None
    if argv[:1] == [ROOM_OPTION] and len(argv) > 1:
        room, argv = Path(argv[1]), argv[2:]
    if len(argv) < 3 or argv[1] != "--" or argv[0] not in PROGRAMS:
        print(f"usage: python -m appliance.supervise.launch [{ROOM_OPTION} DIR] {{" + ",".join(PROGRAMS)
              + "} -- COMMAND [ARG...]", file=sys.stderr)
        return ExitCode.CONFIG
    command = argv[2:]
    if room is not None:
        wait_for_room(room, argv[0])
    try:
        os.execvpe(command[0], command, program_env(argv[0], process_environment()))
    except OSError as exc:
        print(f"launch: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
