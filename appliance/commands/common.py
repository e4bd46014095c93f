"""What every subcommand shares: loading the configuration (exit 2 on bad input) and printing results."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn, TextIO

from appliance.config import Config, load_config, redact_url, set_process_env
from appliance.errors import ConfigError
from appliance.logs import setup_logging
from appliance.redaction import Redactor, guard_output

EXIT_CONFIG = 2


def config_or_exit(with_jobs: bool = True) -> Config:
    """The validated configuration; on bad input, print every problem to stderr and exit with code 2."""
    try:
        config = load_config(with_jobs=with_jobs)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    # Everything a command prints from here on (results, messages, a job's own output) passes the registry,
    # including records stored before secrets were masked at write time.
    guard_output(Redactor.from_config(config))
    return config


def use_metrics_dir(config: Config) -> None:
    """Point prometheus_client's multiprocess mode at the shared directory; call before importing metrics."""
    config.core.metrics_dir.mkdir(parents=True, exist_ok=True)
    set_process_env("PROMETHEUS_MULTIPROC_DIR", str(config.core.metrics_dir))


def setup_logs(config: Config, process: str, stream: TextIO | None = None) -> None:
    """This process's logging, masked by the configuration's secret registry; on stderr unless ``stream``
    (the supervised programs log to stdout: see ``appliance.logs.setup_logging``)."""
    setup_logging(config.core.log_format, config.core.log_level, process, Redactor.from_config(config), stream)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"appliance: {redact_url(message)}", file=sys.stderr)
    raise SystemExit(code)
