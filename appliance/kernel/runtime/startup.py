"""What every entry point does first: the validated configuration (every problem listed, exit code 2), its
secret registry on everything the process prints, its logs and the shared metrics directory.

Shared by the CLI's commands and the sidecar's WSGI module, which must not import the CLI.
"""

from __future__ import annotations

import sys
from typing import NoReturn, TextIO

from appliance.config import Config, set_process_env
from appliance.errors import ConfigError
from appliance.kernel.contract.catalog import Jobs, load_config_and_jobs
from appliance.kernel.contract.packs import load_settings
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.logs import setup_logging
from appliance.kernel.runtime.redaction import Redactor, guard_output


def config_or_exit() -> Config:
    """The validated configuration with every installed pack's settings; on bad input, print every problem to
    stderr and exit with code 2. No job is imported: see ``jobs_or_exit``."""
    try:
        config = load_settings()
    except ConfigError as exc:
        _exit(exc)
    _guard(config)
    return config


def jobs_or_exit() -> tuple[Config, Jobs]:
    """``config_or_exit`` and the resolved jobs, for the commands that run or show jobs; the problems of both
    are listed together."""
    try:
        config, jobs = load_config_and_jobs()
    except ConfigError as exc:
        _exit(exc)
    _guard(config)
    return config, jobs


def _exit(exc: ConfigError) -> NoReturn:
    print(f"appliance: {exc}", file=sys.stderr)
    raise SystemExit(ExitCode.CONFIG) from None


def _guard(config: Config) -> None:
    # Everything a process prints from here on (results, messages, a job's own output) passes the registry,
    # including records stored before secrets were masked at write time.
    guard_output(Redactor.from_config(config))


def use_metrics_dir(config: Config) -> None:
    """Point prometheus_client's multiprocess mode at the shared directory; call before importing metrics."""
    config.core.metrics_dir.mkdir(parents=True, exist_ok=True)
    set_process_env("PROMETHEUS_MULTIPROC_DIR", str(config.core.metrics_dir))


def setup_logs(config: Config, process: str, stream: TextIO | None = None, background: bool = False) -> None:
    """This process's logging, masked by the configuration's secret registry; on stderr unless ``stream``
    (the supervised programs log to stdout: see ``appliance.kernel.runtime.logs.setup_logging``);
    ``background``: written by a thread of their own (the worker's runs never wait for one another's lines)."""
    setup_logging(config.core.log_format, config.core.log_level, process, Redactor.from_config(config), stream,
                  background)
