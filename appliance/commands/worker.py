"""``appliance worker``: the scheduler loop that Supervisor runs as program ``worker``."""

from __future__ import annotations

import argparse
import sys

from appliance.kernel.runtime.startup import jobs_or_exit, setup_logs, use_metrics_dir


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("worker", help="run the job scheduler loop in the foreground")
    parser.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    config, jobs = jobs_or_exit()
    use_metrics_dir(config)
    setup_logs(config, "worker", sys.stdout, background=True)
    from appliance.worker.main import serve  # the worker's modules, for this command only

    return serve(config, jobs.enabled)
