"""The ``appliance`` command: one subcommand per operator task (see ``appliance --help``)."""

from __future__ import annotations

import argparse
import importlib
import sys

from appliance.errors import UntrustedService

#: Exit code of a refused server certificate: like bad configuration, restarting will not help.
EXIT_UNTRUSTED = 2

#: Modules that each add subcommands with ``register(subparsers)``.
COMMAND_MODULES = (
    "appliance.commands.run",
    "appliance.commands.worker",
    "appliance.commands.sidecar",
    "appliance.commands.core",
    "appliance.commands.demo",
    "appliance.commands.control",
    "appliance.commands.audit",
    "appliance.commands.knowledge",
    "appliance.commands.tools",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A refused server certificate is a configuration problem: one line and exit 2 (Supervisor marks the
        # program FATAL instead of restarting it), never a traceback.
        from appliance.clients import untrusted

        refused = str(exc) if isinstance(exc, UntrustedService) else untrusted(exc)
        if refused is None:
            raise
        print(f"appliance: {refused}", file=sys.stderr)
        return EXIT_UNTRUSTED


if __name__ == "__main__":
    sys.exit(main())
