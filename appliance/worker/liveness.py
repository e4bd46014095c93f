"""Which earlier worker processes on this machine are dead, known at once instead of after a lease TTL.

Each worker holds an exclusive ``flock`` on ``$APPLIANCE_HOME/run/workers/<worker id>.lock`` for its whole
life. The kernel drops the lock when the process ends, however it ends (kill -9, supervisord's SIGKILL, an
OOM kill), so a worker starting later that can take the lock of an earlier id knows that process is gone
and can close its runs and free its leases right away. A worker on another machine (or with another
``APPLIANCE_HOME``) has no file here: its runs are left to the lease TTL and the takeover. So has a worker
that started while the disk was full (it cannot create its file, and tries again at every heartbeat).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from appliance.kernel.runtime.disk import is_full_error


class Liveness:
    def __init__(self, directory: Path, me: str):
        self.directory = directory
        self.me = me
        self._fd: int | None = None

    def _path(self, worker: str) -> Path:
        return self.directory / f"{worker.replace('/', '_')}.lock"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self) -> bool:
        """Take this process' own lock (kept until the process exits). False when its file cannot be made now
        because the disk is full: the worker runs anyway and tries again later (``held``); until then a
        successor learns that this process is gone from the lease TTL instead."""
        if self._fd is not None:
            return True
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._path(self.me), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if is_full_error(exc):
                return False
            raise
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = fd
        return True

    def is_dead(self, worker: str) -> bool:
        """True when ``worker`` ran here and is gone: an earlier process with this very id (ids are host:pid,
        and pids repeat after a container restart), or one whose lock file is free."""
        if worker == self.me:
            return True
        path = self._path(worker)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        else:
            path.unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)
