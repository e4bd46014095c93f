"""``appliance worker``: the scheduler loop that Supervisor runs as program ``worker``."""

from __future__ import annotations

import argparse
import sys

from appliance.commands.common import jobs_or_exit, setup_logs, use_metrics_dir


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("worker", help="run the job scheduler loop in the foreground")
    parser.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    config, jobs = jobs_or_exit()
    use_metrics_dir(config)
    setup_logs(config, "worker", sys.stdout)
    from appliance.worker.main import serve  # after use_metrics_dir: prometheus_client reads it at import

    return serve(config, jobs.enabled)
