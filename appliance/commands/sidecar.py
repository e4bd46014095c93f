"""``appliance sidecar``: health, metrics, admin API and dashboard under gunicorn (Supervisor program ``sidecar``)."""

from __future__ import annotations

import argparse
import sys

from appliance.kernel.runtime.startup import config_or_exit, setup_logs, use_metrics_dir


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sidecar", help="serve /health, /metrics, the admin API and /admin on $PORT (3002)")
    parser.set_defaults(handler=run_sidecar)


def run_sidecar(args: argparse.Namespace) -> int:
    """Serve until stopped; exits 2 on bad configuration. The sidecar needs no job settings, only what the
    workers publish, so it starts even while a jobs file is being fixed."""
    config = config_or_exit()
    use_metrics_dir(config)
    setup_logs(config, "sidecar", sys.stdout)
    from appliance.sidecar.server import SidecarServer  # the sidecar's modules, for this command only

    SidecarServer(config).run()
    return 0
