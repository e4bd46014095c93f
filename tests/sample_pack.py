"""A job pack of one's own, as a user would write it (tests/kernel/contract/test_packs.py installs it through an entry
point): settings, a job, a command and a ``/health`` section, registered in ``PACK``. It imports
``appliance.sdk`` and the settings reader of ``appliance.config`` and nothing else of the appliance
(tests/test_layers.py holds it to that): the proof that a pack needs no more."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from appliance.config import Config
from appliance.config.env import EnvReader
from appliance.sdk import (
    ExitCode,
    JobSpec,
    Pack,
    RunContext,
    complete_slot,
    jobs_or_exit,
    print_json,
    run_once,
    use_metrics_dir,
)


@dataclass(frozen=True)
class ReportsConfig:
    recipients: int


def load_reports(env: EnvReader) -> ReportsConfig:
    return ReportsConfig(recipients=env.int("REPORTS_RECIPIENTS", 3, min=1))


def nightly(ctx: RunContext) -> dict[str, Any]:
    """Sends the report (here: counts its recipients) and ends its slot in the same transaction, fenced."""
    sent = 0
    for _ in range(ctx.config.reports.recipients):
        ctx.checkpoint()
        sent += 1
    assert ctx.db is not None
    with ctx.db.connection() as conn, conn.transaction():
        complete_slot(conn, ctx)
    ctx.processed(sent)
    return {"sent": sent}


JOBS = [JobSpec("nightly-report", nightly, "02:00", "the nightly report")]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("reports", help="say how many recipients the nightly report has")
    parser.set_defaults(handler=lambda args: print("reports: 3 recipients") or 0)
    now = sub.add_parser("reports-now", help="send the nightly report now, in this process")
    now.set_defaults(handler=send_now)


def send_now(args: argparse.Namespace) -> int:
    config, jobs = jobs_or_exit()
    use_metrics_dir(config)
    run = run_once(config, jobs, "nightly-report", reason="reports-now", by="reports")
    print_json({"ran": run.ran, "outcome": run.outcome, "error": run.error})
    return ExitCode.OK if run.succeeded else ExitCode.BUSY if not run.ran else ExitCode.FAILED


def health(config: Config) -> dict[str, Any]:
    return {"recipients": config.reports.recipients}


PACK = Pack(name="reports", settings=load_reports, jobs="tests.sample_pack:JOBS",
            commands="tests.sample_pack:register", health=health)
