"""A job pack of one's own, as a user would write it (tests/unit/test_packs.py installs it through an entry
point): settings, a job, a command and a ``/health`` section, registered in ``PACK``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from appliance.config import Config
from appliance.config.env import EnvReader
from appliance.kernel.context import RunContext
from appliance.kernel.jobspec import JobSpec
from appliance.kernel.packs import Pack


@dataclass(frozen=True)
class ReportsConfig:
    recipients: int


def load_reports(env: EnvReader) -> ReportsConfig:
    return ReportsConfig(recipients=env.int("REPORTS_RECIPIENTS", 3, min=1))


def nightly(ctx: RunContext) -> dict[str, Any]:
    return {"sent": ctx.config.reports.recipients}


JOBS = [JobSpec("nightly-report", nightly, "02:00", "the nightly report")]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("reports", help="say how many recipients the nightly report has")
    parser.set_defaults(handler=lambda args: print("reports: 3 recipients") or 0)


def health(config: Config) -> dict[str, Any]:
    return {"recipients": config.reports.recipients}


PACK = Pack(name="reports", settings=load_reports, jobs="tests.sample_pack:JOBS",
            commands="tests.sample_pack:register", health=health)
