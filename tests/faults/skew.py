"""Worker processes whose wall clock is off by a given offset: libfaketime in ``LD_PRELOAD``.

Only the wall clock is moved (``time.time()``, ``datetime.now()``): ``FAKETIME_DONT_FAKE_MONOTONIC=1`` keeps the
monotonic clock, as on real machines whose clocks disagree on the time of day but run at the same rate. Redis
and PostgreSQL run on the true clock. ``skewed_site`` mends ``time.sleep`` under libfaketime (see there).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from tests.worker.harness import REPO

SITE = Path(__file__).resolve().parent / "skewed_site"


def libfaketime() -> Path | None:
    """The installed libfaketime (the Debian package ``faketime`` puts it under the multiarch libdir)."""
    for pattern in ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                    "/usr/local/lib/faketime/libfaketime.so.1"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None


def require_libfaketime() -> Path:
    """libfaketime, or the test is skipped (failed under CI) saying how to install it."""
    found = libfaketime()
    if found is None:
        message = "libfaketime is not installed (./scripts/install --test installs the faketime package)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def skewed(offset: float) -> dict[str, str]:
    """Environment entries that put a process's wall clock ``offset`` seconds off the true time."""
    if offset == 0:
        return {}
    return {**_preload(), "FAKETIME": f"{offset:+g}s"}


class SteppableClock:
    """A wall clock offset that a test changes while the process runs: libfaketime reads it from a file, at
    most a second after each change (``FAKETIME_CACHE_DURATION``)."""

    def __init__(self, path: Path, offset: float):
        self.path = path
        self.set(offset)

    def set(self, offset: float) -> None:
        self.path.write_text(f"{offset:+g}s\n")

    def env(self) -> dict[str, str]:
        return {**_preload(), "FAKETIME_TIMESTAMP_FILE": str(self.path), "FAKETIME_CACHE_DURATION": "1"}


def _preload() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(SITE), str(REPO), os.environ.get("PYTHONPATH")]))
    return {"LD_PRELOAD": str(require_libfaketime()), "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": path}
