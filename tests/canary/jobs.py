"""The job of the canary test: it prints, logs and raises a text holding every secret of the appliance (in
the forms a real error would show them), as a careless job or a library's exception could."""

from __future__ import annotations

import logging
import os
from pathlib import Path

TEXT_FILE = "CANARY_TEXT_FILE"


def leak(ctx) -> None:
    text = Path(os.environ[TEXT_FILE]).read_text()
    print(f"job output: {text}", flush=True)
    logging.getLogger("tests.canary").warning("job log line: %s", text)
    raise RuntimeError(f"request failed: {text}")
