"""Files the appliance writes itself (secrets, markers, metadata), replaced whole or not at all.

A file rewritten in place is half old, half new, or empty when the disk fills up in the middle of the write
(``ENOSPC``) or the machine stops. ``write_atomic`` writes a temporary file next to the target, flushes it to
the disk (``fsync``), then renames it over the target and flushes the directory: a reader sees the old file
or the new one, never a mix, and a failure leaves the old file as it was and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``; the file has ``mode`` from its first byte. Raises ``OSError`` (the old
    file untouched) when it cannot be written, ``ENOSPC`` included."""
    payload = data.encode() if isinstance(data, str) else data
    # One temporary name per process: two writers of the same file never share (or delete) a temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)  # the data is on the disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a filesystem that cannot sync a directory is left as it is)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself has happened
    finally:
        os.close(fd)
