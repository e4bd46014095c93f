"""Supervisor event listener: a critical program that goes FATAL stops the whole appliance.

A program is FATAL when it kept exiting during start (``startretries`` used up), for example a worker whose
configuration is invalid (exit 2). Running on without it is worse than stopping: the container looks
alive while no job runs. So the listener records which program failed in a marker file and sends SIGTERM
to supervisord (its parent), which stops the other programs in order; ``appliance.supervise.pid1`` then
sees the marker and exits non-zero, and the orchestrator restarts or reports the container.

Run by supervisord as ``[eventlistener:fatal]``: ``python -m appliance.supervise.fatal MARKER PROGRAM,...``.
It speaks Supervisor's listener protocol on stdin/stdout; its own messages go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from supervisor import childutils

from appliance.kernel.runtime.clock import SYSTEM
from appliance.kernel.runtime.disk import is_full_error
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.files import write_atomic

#: Seconds between two tries of writing the marker on a full disk.
MARKER_RETRY = 1.0


def handle(headers: dict[str, str], payload: str, critical: set[str], marker: Path, stop) -> bool:
    """React to one event; True when it stopped the appliance. ``stop`` ends supervisord."""
    if headers.get("eventname") != "PROCESS_STATE_FATAL":
        return False
    event = childutils.get_headers(payload)
    name = event.get("processname", "")
    if name not in critical:
        return False
    record = {"program": name, "group": event.get("groupname", name), "at": SYSTEM.time()}
    write_marker(marker, record)
    print(f"fatal: program {name} went FATAL (it kept exiting at start); stopping the appliance",
          file=sys.stderr, flush=True)
    stop()
    return True


def write_marker(marker: Path, record: dict, sleep: Callable[[float], None] = SYSTEM.sleep) -> None:
    """Write the marker whole (``appliance.kernel.runtime.files``). While the disk is full, wait for space instead: the
    marker is what makes the appliance exit 3 rather than 0, and a restart could not start on a full disk
    anyway. Meanwhile the other programs keep running. Any other failure is reported and the stop goes on."""
    waiting = False
    while True:
        try:
            write_atomic(marker, json.dumps(record))
        except OSError as exc:
            if not is_full_error(exc):
                print(f"fatal: could not write {marker.name} ({exc.strerror}): the appliance will exit 0, not 3",
                      file=sys.stderr, flush=True)
                return
            if not waiting:
                print(f"fatal: program {record['program']} went FATAL while the disk is full; the appliance stops "
                      f"once there is room to record why", file=sys.stderr, flush=True)
                waiting = True
            sleep(MARKER_RETRY)
        else:
            return


def stop_parent() -> None:
    """SIGTERM to supervisord (our parent): it stops every program in order, then exits."""
    os.kill(os.getppid(), signal.SIGTERM)


def listen(critical: set[str], marker: Path, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
           stop=stop_parent) -> None:
    """Serve events until supervisord starts shutting down.

    Leaving at SUPERVISOR_STATE_CHANGE_STOPPING rather than waiting for our own SIGTERM matters for the stop
    time: supervisord stops one program group per turn of its one-second poll loop, and a listener that is
    already gone when its turn comes costs nothing.
    """
    while True:
        headers, payload = childutils.listener.wait(stdin, stdout)
        handle(headers, payload, critical, marker, stop)
        childutils.listener.ok(stdout)
        if headers.get("eventname") == "SUPERVISOR_STATE_CHANGE_STOPPING":
            return


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m appliance.supervise.fatal MARKER_FILE PROGRAM[,PROGRAM...]", file=sys.stderr)
        return ExitCode.CONFIG
    marker, names = Path(argv[0]), {n.strip() for n in argv[1].split(",") if n.strip()}
    with contextlib.suppress(EOFError, KeyboardInterrupt, BrokenPipeError):
        listen(names, marker)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
