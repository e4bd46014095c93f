"""prometheus_client's multiprocess files, with their blocks allocated before they are written through a map.

prometheus_client keeps each process's metrics in a file of the metrics directory that it maps into memory
(``MmapedDict``) and grows with ``truncate``: a sparse file, whose blocks the filesystem allocates only when a
page of the map is first written. On a full filesystem that write cannot fail with an error: the kernel kills
the process with SIGBUS. A worker that counts its first ``skipped_unavailable`` while the disk is full dies in
the middle of its bookkeeping, and restarted it dies again at its first metric, until supervisord gives up.

``AllocatedDict`` allocates every block (``posix_fallocate``) before the map may touch it. When the disk has
no room for a new file or a larger one, the process keeps that file's values in memory instead, where they
still count but are not exported (``/metrics/prometheus`` shows the last values that reached the file), and
moves them into the file at a later write once there is room again. ``install()`` makes prometheus_client
use it; ``appliance.kernel.runtime.metrics`` calls it before it makes the first metric.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

from prometheus_client import mmap_dict, values

from appliance.kernel.runtime.clock import SYSTEM
from appliance.kernel.runtime.disk import is_full_error

#: Written against prometheus_client 0.26 (pinned in pyproject.toml): its first size, and its entry layout.
INITIAL = mmap_dict._INITIAL_MMAP_SIZE
#: Seconds between two tries of moving values kept in memory back into their file.
RETRY = 1.0


def entry_size(key: str) -> int:
    """Bytes ``MmapedDict._init_value`` appends for ``key``: its length, the key padded to 8 bytes, two doubles."""
    encoded = len(key.encode("utf-8"))
    return 4 + encoded + (8 - (encoded + 4) % 8) + 16


class AllocatedDict(mmap_dict.MmapedDict):
    """``MmapedDict`` whose file is allocated before it is mapped, or kept in memory while it cannot be."""

    def __init__(self, filename: str, read_mode: bool = False):
        if read_mode:
            super().__init__(filename, read_mode)
            return
        self._fname = filename
        self._positions: dict[str, int] = {}
        self._retry_at = 0.0
        try:
            self._open_file()
        except OSError as exc:
            if not is_full_error(exc):
                raise
            self._keep_in_memory(INITIAL, b"")

    # -- where the values live --------------------------------------------------------------------------
    def _open_file(self) -> None:
        """Map the file (its values read back when it has some, as ``MmapedDict`` does), all of it allocated."""
        self._f, self._m = self._map_file(INITIAL)
        self._capacity = len(self._m)
        self._used = mmap_dict._unpack_integer(self._m, 0)[0]
        if self._used == 0:
            self._used = 8
            mmap_dict._pack_integer(self._m, 0, self._used)
        else:
            for key, _, _, pos in self._read_all_values():
                self._positions[key] = pos

    def _map_file(self, capacity: int) -> tuple[Any, mmap.mmap]:
        """The file open and mapped, at least ``capacity`` bytes, every block allocated."""
        created = not os.path.exists(self._fname)
        f = open(self._fname, "a+b")  # noqa: SIM115 - kept open as long as the map, closed by close()
        try:
            capacity = max(os.fstat(f.fileno()).st_size, capacity)
            _allocate(f.fileno(), capacity)
            return f, mmap.mmap(f.fileno(), capacity)
        except BaseException:
            f.close()
            if created:
                # A file left empty would break every reader (it expects at least its 8-byte header).
                os.unlink(self._fname)
            raise

    def _keep_in_memory(self, capacity: int, content: bytes) -> None:
        """Values in an anonymous map (memory, never SIGBUS); the file, if any, keeps what it had."""
        if getattr(self, "_f", None) is not None:
            self._f.close()
        m = mmap.mmap(-1, capacity)
        m[:len(content)] = content
        self._f, self._m, self._capacity = None, m, capacity
        self._used = max(len(content), 8)
        mmap_dict._pack_integer(m, 0, self._used)
        self._retry_at = SYSTEM.monotonic() + RETRY

    def _back_to_file(self) -> None:
        """Values kept in memory go (back) into the file, when there is room for it now."""
        if self._f is not None or SYSTEM.monotonic() < self._retry_at:
            return
        try:
            f, m = self._map_file(self._capacity)
        except OSError as exc:
            if not is_full_error(exc):
                raise
            self._retry_at = SYSTEM.monotonic() + RETRY
            return
        # The same layout as in memory, so every key keeps its position; the header (used) is copied last.
        m[8:self._used] = self._m[8:self._used]
        mmap_dict._pack_integer(m, 0, self._used)
        self._f, self._m, self._capacity = f, m, len(m)

    def _grow(self, needed: int) -> None:
        """Room for ``needed`` bytes: a larger allocated file, or memory when the disk has no room."""
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        if self._f is not None:
            try:
                _allocate(self._f.fileno(), capacity)
                self._m = mmap.mmap(self._f.fileno(), capacity)
                self._capacity = capacity
                return
            except OSError as exc:
                if not is_full_error(exc):
                    raise
        self._keep_in_memory(capacity, bytes(self._m[:self._used]))

    # -- MmapedDict ---------------------------------------------------------------------------------------
    def _init_value(self, key: str) -> None:
        self._back_to_file()
        needed = self._used + entry_size(key)
        if needed > self._capacity:
            self._grow(needed)
        super()._init_value(key)  # fits: its own growing (a sparse truncate) never runs

    def write_value(self, key: str, value: float, timestamp: float) -> None:
        self._back_to_file()
        super().write_value(key, value, timestamp)


def _allocate(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of ``fd``'s file. A filesystem that cannot preallocate at all is left as
    prometheus_client leaves it; a full one raises."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if is_full_error(exc):
            raise


def install() -> None:
    """Make prometheus_client's multiprocess values use ``AllocatedDict`` (call before any metric exists), and
    choose the kind of value now: prometheus_client chose it when first imported, reading
    ``PROMETHEUS_MULTIPROC_DIR`` then, so that whichever module imported it first decided, possibly before the
    entry point had set the directory. Chosen here, at the first metric, the order of imports no longer matters."""
    setattr(values, "MmapedDict", AllocatedDict)  # noqa: B010 - values has no typed hook for it
    values.ValueClass = values.get_value_class()

