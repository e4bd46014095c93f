"""``appliance run``: the image's CMD and what ``./scripts/run`` ends with.

Validate the configuration (exit 2 listing every problem), choose embedded or external services, create
the directories, apply the database migrations (advisory-locked), then replace this process with
supervisord in the foreground (``appliance.supervise.pid1``), which runs the programs of
``supervisord.conf``. Exit codes: 2 bad configuration (or an embedded data directory of another PostgreSQL
major version), 1 a start step failed, otherwise supervisord's (0 stopped on request, 3 a critical program
went FATAL).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from appliance.commands.tools import redis_cli_hint
from appliance.config import set_process_env
from appliance.errors import ConfigError
from appliance.kernel.runtime.disk import is_full_error
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.logs import fields
from appliance.kernel.runtime.output import fail
from appliance.kernel.runtime.startup import jobs_or_exit, setup_logs
from appliance.supervise.pgversion import MajorVersionMismatch
from appliance.supervise.plan import plan_services, supervisor_env
from appliance.supervise.prepare import StartupError, fatal_marker, make_dirs, migrate_database

log = logging.getLogger("appliance.run")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="start the appliance: migrations, then supervisord in the foreground "
                                        "running qdrant, worker and sidecar (and embedded redis/postgres)")
    parser.set_defaults(handler=run_appliance)


def _start_failure(exc: BaseException) -> str:
    """What went wrong, and on a full disk (the error itself, or the embedded PostgreSQL's words) what to do."""
    text = str(exc)
    if is_full_error(exc) or "No space left on device" in text:
        return (f"{text}\nAPPLIANCE_HOME's filesystem is full: free space there (docs/operations.md, "
                f"\"A full disk\") and start again")
    return text


def run_appliance(args: argparse.Namespace) -> int:
    # The jobs too: a broken jobs file stops the appliance here with exit code 2, before any program starts.
    config, _ = jobs_or_exit()
    setup_logs(config, "run")
    try:
        plan = plan_services(config)
        env = supervisor_env(config, plan)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except (FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    log.info("services", extra=fields(**plan.describe()))
    if plan.qdrant == "embedded":
        log.info("no Qdrant binary (QDRANT_BIN unset, none on PATH): the qdrant program stays stopped and the "
                 "knowledge base uses the embedded Qdrant Edge storage (./scripts/install fetches the server)",
                 extra=fields(path=str(config.core.qdrant_edge_path)))
    try:
        make_dirs(config, plan)
        applied = migrate_database(config, plan)
    except MajorVersionMismatch as exc:
        # Like bad configuration: a restart finds the same directory, so the orchestrator should not retry.
        fail(str(exc), ExitCode.CONFIG)
    except (StartupError, OSError) as exc:
        fail(_start_failure(exc))
    log.info("database schema up to date", extra=fields(applied=",".join(applied) or "none"))
    log.info("this appliance's Redis from a shell: %s", redis_cli_hint())
    for name, value in env.items():
        set_process_env(name, value)
    argv = [sys.executable, "-m", "appliance.supervise.pid1", str(fatal_marker(config.core.run_dir)),
            "-n", "-c", str(plan.supervisor_conf)]
    log.info("starting supervisord", extra=fields(conf=str(plan.supervisor_conf)))
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execv(argv[0], argv)
    return ExitCode.FAILED
