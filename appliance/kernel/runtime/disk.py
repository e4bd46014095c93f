"""The free space of the filesystem that holds ``APPLIANCE_HOME``, and when it counts as full.

Everything the appliance keeps lives there: the embedded PostgreSQL and Redis, Qdrant's storage, the logs,
the metrics files, the worker's liveness files. When it fills up, PostgreSQL cannot start a new WAL segment
(it stops, and its crash recovery needs a new segment too), Redis refuses every write (``MISCONF``), and a
log line or metric written then is lost. ``FULL_BELOW`` is the room below which the disk counts as full:
what PostgreSQL needs to start again after such a stop (one 16 MiB WAL segment and its checkpoint), with a
margin for Redis and the logs. Below it, ``/health`` blames the failures of the programs that write there on
the disk, and the supervised services wait for room before they start (``appliance.supervise.headroom``).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

FULL_BELOW = 32 * 1024 * 1024
#: What a write answers on a full filesystem, or a full quota.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Space:
    """One look at a filesystem, as an unprivileged program sees it (root's reserved blocks left out)."""

    free_bytes: int
    total_bytes: int
    #: None on filesystems that do not count inodes (btrfs, some network filesystems).
    free_inodes: int | None
    #: ``ext4``, ``xfs``, ``overlay``, ``tmpfs``...; empty when unknown.
    fstype: str = ""

    @property
    def full(self) -> bool:
        """Too little room to restart PostgreSQL, or no inode left for a new file."""
        return self.free_bytes < FULL_BELOW or self.free_inodes == 0


def measure(path: Path) -> Space:
    """The space of the filesystem holding ``path``; raises ``OSError`` when ``path`` cannot be looked at."""
    stats = os.statvfs(path)
    inodes = stats.f_favail if stats.f_files else None
    return Space(free_bytes=stats.f_bavail * stats.f_frsize, total_bytes=stats.f_blocks * stats.f_frsize,
                 free_inodes=inodes, fstype=filesystem_type(path))


def filesystem_type(path: Path, mountinfo: Path = MOUNTINFO) -> str:
    """The type of the filesystem holding ``path``, from the kernel's table of this process's mounts (found by
    device number, so a bind mount or a symlink leads to the right one); empty when it cannot be told."""
    try:
        device = os.stat(path).st_dev
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return ""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and " - " in line:
            return line.split(" - ", 1)[1].split()[0]
    return ""


def is_full_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a write refused for lack of space."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def size_text(count: float) -> str:
    """``count`` bytes for a human: ``0 B``, ``188 KiB``, ``31.9 MiB``, ``1.2 GiB``."""
    unit = "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024:
            break
        count, unit = count / 1024, bigger
    return f"{count:.0f} {unit}" if unit == "B" or count == int(count) else f"{count:.1f} {unit}"
