"""Jobs that make the appliance's stop hard (loaded through ``APPLIANCE_JOBS_FILE``).

``stubborn`` ignores its checkpoints: it sleeps through the whole stop window. ``gil`` holds the GIL in one
C call (a regular expression backtracking for hours), so not even the worker's signal handler runs until
supervisord's SIGKILL.
"""

from __future__ import annotations

import re
import time


def stubborn(ctx) -> None:
    time.sleep(600)


def gil(ctx) -> None:
    re.match(r"(a+)+$", "a" * 48 + "b")
