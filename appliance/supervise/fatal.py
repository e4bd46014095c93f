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
from pathlib import Path
from typing import TextIO

from supervisor import childutils

from appliance.kernel.clock import SYSTEM


def handle(headers: dict[str, str], payload: str, critical: set[str], marker: Path, stop) -> bool:
    """React to one event; True when it stopped the appliance. ``stop`` ends supervisord."""
    if headers.get("eventname") != "PROCESS_STATE_FATAL":
        return False
    event = childutils.get_headers(payload)
    name = event.get("processname", "")
    if name not in critical:
        return False
    record = {"program": name, "group": event.get("groupname", name), "at": SYSTEM.time()}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(marker)
    print(f"fatal: program {name} went FATAL (it kept exiting at start); stopping the appliance",
          file=sys.stderr, flush=True)
    stop()
    return True


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
        return 2
    marker, names = Path(argv[0]), {n.strip() for n in argv[1].split(",") if n.strip()}
    with contextlib.suppress(EOFError, KeyboardInterrupt, BrokenPipeError):
        listen(names, marker)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
