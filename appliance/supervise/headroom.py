"""A storage program (the embedded PostgreSQL and Redis, the Qdrant server) starts only with room to start.

PostgreSQL that could not add a WAL segment to a full disk stops, and its crash recovery at the next start
needs a new segment too: started again on the full disk it exits within a second, three times, and
supervisord gives up on it (FATAL), which stops the whole appliance. So the launcher first waits, in the
program's place, until the filesystem of the program's data directory is no longer full
(``appliance.kernel.runtime.disk``), then starts it. supervisord sees a program that stays up (RUNNING, no FATAL);
``/health`` says why the service does not answer; the program starts by itself once space returns.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TextIO

from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.disk import FULL_BELOW, Space, measure, size_text

#: Seconds between two looks at the disk while waiting.
POLL = 1.0


def wait_for_room(directory: Path, program: str, clock: Clock = SYSTEM, out: TextIO = sys.stderr) -> float:
    """Return once ``directory``'s filesystem is not full; the seconds waited. A directory that cannot be
    looked at is the program's to report: no wait. SIGTERM, SIGINT or SIGQUIT while waiting exit 0 (the
    program was stopped before it started)."""
    space = _look(directory)
    if space is None or not space.full:
        return 0.0
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)}
    started = clock.monotonic()
    print(f"launch: {program} waits for room on the filesystem of {directory}: {_describe(space)}; it starts by "
          f"itself once {size_text(FULL_BELOW)} and an inode are free", file=out, flush=True)
    try:
        while space is not None and space.full:
            clock.sleep(POLL)
            space = _look(directory)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    waited = clock.monotonic() - started
    print(f"launch: room on the disk again after {waited:.0f}s; starting {program}", file=out, flush=True)
    return waited


def _look(directory: Path) -> Space | None:
    try:
        return measure(directory)
    except OSError:
        return None


def _describe(space: Space) -> str:
    inodes = "" if space.free_inodes is None else f", {space.free_inodes} inodes"
    return f"{size_text(space.free_bytes)} free of {size_text(space.total_bytes)}{inodes}"


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(0)
