"""The file lock that guards the embedded Qdrant storage: one process at a time, and who holds it.

Qdrant Edge keeps a write-ahead log that admits one process; a second process that opens the same shard
fails on the WAL, and the first one's next flush fails too. So no process opens the shard without first
holding this lock: an exclusive ``flock`` on ``<storage>/.lock``, which the kernel drops when the holder
exits, however it exits (``kill -9`` included), so a crashed worker never leaves the storage locked.

The holder writes who it is (pid, program, host, since when) into the same file, so a process that finds
the storage busy can say who holds it instead of only "busy".
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from appliance.sdk import SYSTEM, ApplianceError, Clock, is_full_error, iso

LOCK_FILE = ".lock"
_POLL = 0.05


class StorageBusy(ApplianceError):
    """Embedded mode: another process has the knowledge storage open; the message says which one."""


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as the holder wrote it."""

    pid: int
    program: str
    host: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.program}) on {self.host} since {self.since}"


def program_name(argv: list[str] | None = None) -> str:
    """``appliance worker``, ``appliance knowledge search``...: what an operator would type to start it."""
    argv = sys.argv if argv is None else argv
    first = Path(argv[0]).name if argv else "python"
    if first in ("appliance", "__main__.py"):
        words = [w for w in argv[1:3] if not w.startswith("-")]
        return " ".join(["appliance", *words])
    return first


class StorageLock:
    """An exclusive lock on one storage directory, held by this process until ``release``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits."""
        if self._fd is not None:
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        self._describe(fd)
        return True

    @staticmethod
    def _describe(fd: int) -> None:
        """Write who holds the lock into its file. The lock is held whether or not this succeeds: on a full disk
        the file is left empty (the holder then reads as "another process"), never half a description."""
        me = {"pid": os.getpid(), "program": program_name(), "host": socket.gethostname(), "since": iso(SYSTEM.now())}
        text = json.dumps(me).encode()
        os.ftruncate(fd, 0)
        try:
            if os.pwrite(fd, text, 0) == len(text):
                return
        except OSError as exc:
            if not is_full_error(exc):
                raise
        os.ftruncate(fd, 0)

    def acquire(self, wait: float, clock: Clock = SYSTEM) -> None:
        """Take the lock, waiting up to ``wait`` seconds of ``clock``; raise ``StorageBusy`` naming the holder."""
        deadline = clock.monotonic() + wait
        while not self.try_acquire():
            if clock.monotonic() >= deadline:
                raise StorageBusy(self.busy_message(wait))
            clock.sleep(_POLL)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # Closing drops the flock; the holder's description stays, harmless, until the next holder
            # overwrites it (it is read only while the lock is taken).
            os.close(fd)

    def holder(self) -> Holder | None:
        """Who holds the lock now, or None when it is free (or the holder has not written itself yet)."""
        if self.try_acquire_probe():
            return None
        return self._written_holder()

    def try_acquire_probe(self) -> bool:
        """Whether the lock is free right now (taking and dropping it at once); True when this process holds it."""
        if self._fd is not None:
            return False
        if not self.try_acquire():
            return False
        self.release()
        return True

    def held_by(self) -> str | None:
        """Who holds the lock now (``Holder.describe()``), told without creating or writing anything, for checks
        that must leave the storage as it is; None when it is free or absent."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            # A shared lock conflicts with the holder's exclusive one, and writes nothing.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._written_holder()
            return holder.describe() if holder else "another process"
        finally:
            os.close(fd)
        return None

    def _written_holder(self) -> Holder | None:
        try:
            data = json.loads(self.path.read_text() or "{}")
            return Holder(int(data["pid"]), str(data["program"]), str(data["host"]), str(data["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def busy_message(self, waited: float) -> str:
        holder = self.holder()
        who = holder.describe() if holder else "another process"
        return (f"the embedded Qdrant storage {self.directory} is in use by {who}; waited {waited:g}s "
                f"(QDRANT_LOCAL_WAIT). An indexer run of the worker holds it only while it writes: try again "
                f"in a moment, or run a Qdrant server (QDRANT_URL) so that several processes can use it at once")
