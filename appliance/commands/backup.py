"""``appliance backup`` and ``appliance restore`` (``appliance.backup``; docs/operations.md "Backup and restore").

Exit codes, for cron: 0 done; 1 failed (a service did not answer, the store stayed busy, a damaged archive, a
step of the restore failed: nothing was replaced); 2 refused as asked (bad usage, not an appliance backup, a
newer format or schema, the appliance running in the home, a data directory of another PostgreSQL major
version for ``backup``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from appliance.backup.create import UsageError, create_backup, target_path
from appliance.backup.restore import restore_archive
from appliance.config import Config
from appliance.errors import ApplianceError, ConfigError
from appliance.kernel.contract.backup import BackupPart, BackupRefused
from appliance.kernel.contract.packs import packs_of
from appliance.kernel.runtime.clock import SYSTEM
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail
from appliance.kernel.runtime.startup import config_or_exit, setup_logs
from appliance.supervise.pgversion import MajorVersionMismatch
from appliance.supervise.plan import Plan, plan_services

#: Long enough for an indexer run of the worker, which holds the embedded Qdrant storage while it writes.
DEFAULT_WAIT = 600.0


def register(sub: argparse._SubParsersAction) -> None:
    backup = sub.add_parser(
        "backup", help="archive the database and the knowledge collection, consistent while the appliance runs",
        description="write one archive (PostgreSQL dump, the Qdrant collection, a manifest with checksums); its "
                    "path is the last line printed")
    backup.add_argument("--output", metavar="PATH",
                        help="the archive to write, or a directory to write it in (default: $APPLIANCE_HOME/backups)")
    backup.add_argument("--wait", type=_seconds, default=DEFAULT_WAIT, metavar="SECONDS",
                        help=f"how long to wait for the embedded Qdrant storage while an indexer run holds it "
                             f"(default {DEFAULT_WAIT:.0f})")
    backup.set_defaults(handler=backup_command)
    restore = sub.add_parser(
        "restore", help="restore an archive of `appliance backup` into this APPLIANCE_HOME (the appliance stopped)",
        description="check the whole archive, then replace the database and the knowledge collection with it; "
                    "what was there before is kept beside it")
    restore.add_argument("archive", type=Path, help="the archive's path")
    restore.set_defaults(handler=restore_command)


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def backup_command(args: argparse.Namespace) -> int:
    config, plan = _as_programs_see_it(config_or_exit())
    setup_logs(config, "cli")
    os.umask(0o077)
    when = SYSTEM.now()
    with _exit_codes():
        target = target_path(config, args.output, when)
        created = create_backup(config, plan, target, _parts(config), args.wait, when)
    pg = created.manifest["postgres"]
    print(f"postgres: PostgreSQL {pg['server_version']}, schema version {pg['schema_version']}, "
          f"{created.manifest['members'][pg['member']]['size']} bytes dumped")
    for name, info in created.manifest["parts"].items():
        print(f"{name}: {_describe(info)}")
    print(f"archive: {created.size} bytes, {len(created.manifest['members'])} files, {created.seconds:.1f} s")
    print(created.path)
    return 0


def restore_command(args: argparse.Namespace) -> int:
    config, plan = _as_programs_see_it(config_or_exit())
    setup_logs(config, "cli")
    os.umask(0o077)
    started = SYSTEM.monotonic()
    with _exit_codes():
        said = restore_archive(config, plan, args.archive.absolute(), _parts(config), SYSTEM.now())
    for line in said:
        print(line)
    print(f"restored {args.archive} into {config.core.home} in {SYSTEM.monotonic() - started:.1f} s; "
          f"start the appliance (`appliance run`)")
    return 0


@contextmanager
def _exit_codes() -> Iterator[None]:
    """Every refusal and failure as one line and its exit code, never a traceback."""
    try:
        yield
    except (UsageError, BackupRefused, MajorVersionMismatch, ConfigError) as exc:
        fail(str(exc), ExitCode.CONFIG)
    except ApplianceError as exc:  # ArchiveDamaged among them
        fail(str(exc), ExitCode.FAILED)
    except (psycopg.Error, OSError) as exc:
        fail(f"{type(exc).__name__}: {exc}", ExitCode.FAILED)


def _parts(config: Config) -> list[tuple[str, BackupPart]]:
    found = []
    for pack in packs_of(config):
        part = pack.backup_part()
        if part is not None:
            found.append((pack.name, part))
    return found


def _as_programs_see_it(config: Config) -> tuple[Config, Plan]:
    """The service plan, and the configuration with the Qdrant URL ``appliance run`` gives its programs: with a
    bundled Qdrant server and no ``QDRANT_URL``, a shell (``docker exec``) would otherwise take the embedded
    store for it."""
    try:
        plan = plan_services(config)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None
    if plan.qdrant != "server" or config.core.qdrant_url_set:
        return config, plan
    return dataclasses.replace(config, core=dataclasses.replace(config.core, qdrant_url=plan.qdrant_url,
                                                                 qdrant_url_set=True)), plan


def _describe(info: dict) -> str:
    if info.get("qdrant") == "embedded":
        collections = info.get("collections", {})
        return (f"embedded Qdrant, {len(collections)} collection(s), "
                f"{sum(c.get('points', 0) for c in collections.values())} points")
    return ", ".join(f"{key} {value}" for key, value in info.items() if not isinstance(value, dict))
