"""``appliance check-config`` and ``appliance migrate``."""

from __future__ import annotations

import argparse
import logging

from appliance.config import masked
from appliance.kernel.protocol.db.migrate import SchemaTooNew, current_version, migrate
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.clients import connect_db, untrusted
from appliance.kernel.runtime.clock import SYSTEM
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail, print_json
from appliance.kernel.runtime.startup import config_or_exit, jobs_or_exit, setup_logs


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check-config", help="validate the configuration; print it (secrets masked) "
                                                "and the next 5 run times of every job")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(handler=check_config)
    migrate = sub.add_parser("migrate", help="apply pending database migrations (advisory-locked)")
    migrate.set_defaults(handler=run_migrations)


def check_config(args: argparse.Namespace) -> int:
    config, jobs = jobs_or_exit()
    now = SYSTEM.now()
    doc = masked(config)
    notes = doc.pop("notes")
    doc["jobs"] = [
        {**masked(job), "describe": job.schedule.describe(),
         "next_runs": [iso(t) for t in job.schedule.next_runs(now, 5)]}
        for job in jobs
    ]
    doc["notes"] = notes
    if args.json:
        print_json(doc)
        return 0
    for section in ("core", "sidecar", *config.packs):
        if section in doc:
            print(f"[{section}]")
            _print_flat(doc[section], "  ")
    if config.notes:
        print("[seed names]")
        for note in config.notes:
            print(f"  {note}")
    print("[jobs]")
    for job in doc["jobs"]:
        state = "enabled" if job["enabled"] else "disabled"
        print(f"  {job['name']}: {job['describe']} ({state}; lock_ttl={job['lock_ttl']:g}s, "
              f"grace={job['grace']:g}s, max_retries={job['max_retries']}, source={job['source']})")
        for when in job["next_runs"]:
            print(f"      next: {when}")
    return 0


def _print_flat(values: dict, indent: str) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_flat(value, indent + "  ")
        else:
            print(f"{indent}{key} = {value}")


def run_migrations(args: argparse.Namespace) -> int:
    config = config_or_exit()
    setup_logs(config, "migrate")
    try:
        with connect_db(config) as conn:
            applied = migrate(conn)
            version = current_version(conn)
    except SchemaTooNew as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - report any connection or SQL error as one clear line
        refused = untrusted(exc)
        if refused:
            fail(refused, ExitCode.CONFIG)
        fail(f"migration failed: {type(exc).__name__}: {exc}")
    logging.getLogger("appliance.migrate").info("schema at version %d (%d applied now)", version, len(applied))
    return 0
