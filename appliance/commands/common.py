"""What the subcommands share besides the entry point's start (``appliance.kernel.startup``): printing results
and failing with one clear line."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from appliance.config import redact_url
from appliance.kernel.startup import EXIT_CONFIG, config_or_exit, jobs_or_exit, setup_logs, use_metrics_dir

__all__ = ["EXIT_CONFIG", "config_or_exit", "fail", "jobs_or_exit", "print_json", "setup_logs", "use_metrics_dir"]


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"appliance: {redact_url(message)}", file=sys.stderr)
    raise SystemExit(code)
