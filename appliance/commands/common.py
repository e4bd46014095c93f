"""What every subcommand shares: loading the configuration (exit 2 on bad input) and printing results."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from appliance.config import Config, load_config, redact_url, set_process_env
from appliance.errors import ConfigError

EXIT_CONFIG = 2


def config_or_exit(with_jobs: bool = True) -> Config:
    """The validated configuration; on bad input, print every problem to stderr and exit with code 2."""
    try:
        return load_config(with_jobs=with_jobs)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def use_metrics_dir(config: Config) -> None:
    """Point prometheus_client's multiprocess mode at the shared directory; call before importing metrics."""
    config.core.metrics_dir.mkdir(parents=True, exist_ok=True)
    set_process_env("PROMETHEUS_MULTIPROC_DIR", str(config.core.metrics_dir))


def secret_values(config: Config) -> list[str]:
    """The configured secret values, so log output can mask them wherever they appear."""
    c = config
    return [v for v in (c.sidecar.admin_token, c.sidecar.jwt_secret, c.knowledge.openai_api_key,
                        c.core.qdrant_api_key, c.core.alerts.slack_webhook_url, c.core.alerts.webhook_url) if v]


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"appliance: {redact_url(message)}", file=sys.stderr)
    raise SystemExit(code)
