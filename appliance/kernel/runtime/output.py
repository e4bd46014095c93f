"""What a command prints: a result as one JSON document, or one clear line and an exit code."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from appliance.config import redact_url
from appliance.kernel.runtime.exits import ExitCode


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def fail(message: str, code: int = ExitCode.FAILED) -> NoReturn:
    """One line on stderr (any URL's password masked), then exit with ``code``."""
    print(f"appliance: {redact_url(message)}", file=sys.stderr)
    raise SystemExit(code)
