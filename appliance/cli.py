"""The ``appliance`` command: one subcommand per operator task (see ``appliance --help``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping
from typing import Any

from appliance.config import Config
from appliance.errors import ConfigError, UntrustedService
from appliance.kernel.contract.catalog import Jobs
from appliance.kernel.contract.packs import installed_packs
from appliance.kernel.contract.services import RunOutcome, provide
from appliance.kernel.runtime.clients import untrusted
from appliance.kernel.runtime.exits import ExitCode

#: Modules that each add subcommands with ``register(subparsers)``; each job pack adds its own.
COMMAND_MODULES = (
    "appliance.commands.run",
    "appliance.commands.worker",
    "appliance.commands.sidecar",
    "appliance.commands.core",
    "appliance.commands.control",
    "appliance.commands.audit",
    "appliance.commands.schedule",
    "appliance.commands.audit_log",
    "appliance.commands.backfill",
    "appliance.commands.tools",
    "appliance.commands.backup",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for pack in installed_packs():
        pack.register_commands(sub)
    return parser


def _run_once(config: Config, jobs: Jobs, job: str, reason: str, by: str,
              services: Mapping[str, Any]) -> RunOutcome:
    """``appliance.sdk.run_once`` in a command: the worker's runner, its modules imported only when used."""
    from appliance.commands.oneshot import run_job_once

    return run_job_once(config, jobs, job, reason, by, services)


def main(argv: list[str] | None = None) -> int:
    provide(_run_once)
    try:
        parser = build_parser()
    except ConfigError as exc:  # a job pack that cannot be loaded
        print(f"appliance: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A refused server certificate is a configuration problem: one line and exit 2 (Supervisor marks the
        # program FATAL instead of restarting it), never a traceback.
        refused = str(exc) if isinstance(exc, UntrustedService) else untrusted(exc)
        if refused is None:
            raise
        print(f"appliance: {refused}", file=sys.stderr)
        return ExitCode.CONFIG


if __name__ == "__main__":
    sys.exit(main())
