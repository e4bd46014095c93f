"""supervisord's log files on a full disk: one line saying so, no crash, and writing again by itself.

supervisord writes every program's output, and its own log, to rotated files under ``APPLIANCE_HOME/log``
(supervisor's ``RotatingFileHandler``). On a full disk, supervisor as it is:

- prints a traceback on its stderr (the container's log) for every line it cannot write;
- when a file is due for rotation then, renames it and cannot create the new one: the error escapes the
  handler. For a program's output, supervisord closes that program's pipe (its later lines are lost until
  it restarts); for supervisord's own log, the error reaches whatever was logging, supervisord's main loop
  included. And the handler keeps its closed file: after space returns, every line fails again.

Here (installed by ``appliance.supervise.pid1`` before supervisord starts) a write refused for lack of space
costs one line on stderr when the file stops being written and one when it is written again; a rotation
cut short by the full disk is finished (a new file opened) at a later line, once there is room. The lines
written meanwhile are lost (the last one may be cut short): a full disk has no room to keep them.
Written against supervisor 4.2-4.3, which pyproject.toml pins.
"""

from __future__ import annotations

import sys
from typing import Any

from supervisor import loggers

from appliance.kernel.runtime.disk import is_full_error

_handle_error = loggers.Handler.handleError


def emit(handler: Any, record: Any) -> None:
    """``RotatingFileHandler.emit``: write, then rotate when due; a full disk never escapes."""
    handler.refused = None
    # A stream closed under an open handler is a rotation the full disk cut short (close() marks the handler).
    if not (handler.stream.closed and not handler.closed and not _reopen(handler)):
        loggers.FileHandler.emit(handler, record)  # its own failures go to handle_error
        try:
            handler.doRollover()
        except OSError as exc:
            if not is_full_error(exc):
                raise
            handler.refused = exc
    _report(handler)


def handle_error(handler: Any) -> None:
    """``Handler.handleError``: a full disk is noted (``_report`` says so once); anything else as supervisor
    does (a traceback on stderr)."""
    exc = sys.exc_info()[1]
    if exc is not None and is_full_error(exc):
        handler.refused = exc
        return
    _handle_error(handler)


def _reopen(handler: Any) -> bool:
    """A new stream for a handler whose rotation the full disk cut short; False while there is no room."""
    try:
        handler.stream = open(handler.baseFilename, "ab")  # noqa: SIM115 - the handler keeps it, as supervisor does
    except OSError as exc:
        if not is_full_error(exc):
            raise
        handler.refused = exc
        return False
    handler.closed = False
    return True


def _report(handler: Any) -> None:
    """One line on stderr when a file stops being written, one when it is written again."""
    refused = handler.refused
    if refused is not None and not getattr(handler, "full", False):
        handler.full = True
        print(f"supervisord: cannot write {handler.baseFilename} ({refused.strerror}): its lines are lost until "
              f"the disk has room again", file=sys.stderr, flush=True)
    elif refused is None and getattr(handler, "full", False):
        handler.full = False
        print(f"supervisord: writing {handler.baseFilename} again", file=sys.stderr, flush=True)


def install() -> None:
    """Make supervisor's log files behave as described above (call before supervisord opens them)."""
    loggers.RotatingFileHandler.emit = emit
    loggers.Handler.handleError = handle_error
