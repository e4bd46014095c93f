"""A small filesystem of its own for a test (a tmpfs: the tests run as root), and filling it to the last byte.

``SmallDisk.fill`` writes a filler file until the filesystem refuses (``ENOSPC``), in ever smaller writes
down to one byte, then creates empty files until no inode is left either: nothing the appliance writes
afterwards finds room, be it a block, a page or a directory entry. ``release`` removes all of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

FILLER = "filler"
INODE_FILLER = "filler-inodes"


@dataclass
class SmallDisk:
    path: Path

    def mount(self, size: str, inodes: int) -> SmallDisk:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        self.path.mkdir(parents=True, exist_ok=True)
        # 0711 like a fresh APPLIANCE_HOME: PostgreSQL's own user must pass through to its directories.
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes},mode=0711", "tmpfs",
                        str(self.path)], check=True, capture_output=True)
        return self

    def unmount(self) -> None:
        if os.path.ismount(self.path):
            # Lazy: a process of the test that still holds a file open must not keep the mount alive.
            subprocess.run(["umount", "--lazy", str(self.path)], check=False, capture_output=True)

    def free(self) -> tuple[int, int]:
        """(free bytes, free inodes) as an unprivileged program sees them."""
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize, stats.f_favail

    def fill(self, inodes: bool = True) -> None:
        """Leave no free byte and, unless told otherwise, no free inode."""
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = 1 << 20
            while chunk:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        finally:
            os.close(fd)
        if inodes:
            self._fill_inodes()

    def _fill_inodes(self) -> None:
        directory = self.path / INODE_FILLER
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        count = len(os.listdir(directory))
        while True:
            try:
                (directory / str(count)).touch()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            count += 1

    @contextlib.contextmanager
    def kept_full(self, every: float = 0.2):
        """``fill``, then fill again whatever is freed (a process exiting, a temporary file removed) until the
        block ends, as a runaway writer would: the disk stays full however the programs on it react."""
        self.fill()
        stop = threading.Event()

        def refill() -> None:
            while not stop.wait(every):
                self.fill()

        thread = threading.Thread(target=refill, name="filler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        """Give back everything ``fill`` took."""
        (self.path / FILLER).unlink(missing_ok=True)
        shutil.rmtree(self.path / INODE_FILLER, ignore_errors=True)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "8M", inodes: int = 256):
    """A tmpfs of ``size`` bytes and ``inodes`` inodes mounted at ``path``, unmounted at the end (also when
    the test fails)."""
    disk = SmallDisk(path)
    disk.mount(size, inodes)
    try:
        yield disk
    finally:
        disk.unmount()
