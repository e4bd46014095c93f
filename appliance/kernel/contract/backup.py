"""What a job pack adds to ``appliance backup``: a part of the archive holding the pack's data that does not
live in PostgreSQL (the knowledge pack: its Qdrant collection). PostgreSQL itself is archived by the appliance.

A pack names its part in ``Pack.backup`` (``"module:attribute"``), imported by backup and restore only. The
part's files go under a directory of its own in the archive, each with its sha256 in the manifest, next to
what the part records about them (``save``'s answer).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from appliance.errors import ApplianceError
from appliance.kernel.runtime.json_object import JsonObject

if TYPE_CHECKING:
    from appliance.config import Config

#: Bytes compared at once when looking for zeros to leave as holes.
BLOCK = 64 * 1024
_ZEROS = bytes(BLOCK)


class BackupRefused(ApplianceError):
    """The archive cannot be restored here, found before anything changed; the message says what to do."""


class BackupPart(Protocol):
    def save(self, config: Config, directory: Path, consistent_point: Callable[[], None],
             wait: float) -> JsonObject:
        """Write the pack's data as files under ``directory`` (empty, the part's own); return what the manifest
        records about them (JSON, never a secret).

        Call ``consistent_point`` exactly once, at a moment when no write that pairs the pack's store with
        PostgreSQL is half done and none can start until the files are taken: the database snapshot is taken
        inside that call. ``wait``: how long the part may wait for its store to be free."""

    def check(self, config: Config, info: JsonObject) -> None:
        """Raise ``BackupRefused`` when what ``save`` recorded (``info``) cannot be restored into this
        configuration, or its store is in use; changes nothing."""

    def restore(self, config: Config, directory: Path, info: JsonObject, aside: str) -> list[str]:
        """Put the files ``save`` wrote (now in ``directory``) in place of the configuration's store, keeping a
        store already there under the suffix ``aside`` where the part owns files; returns lines for the
        operator."""


def write_sparse(source: IO[bytes], target: Path, size: int, mode: int = 0o600,
                 on_block: Callable[[bytes], None] | None = None) -> None:
    """Copy ``size`` bytes of ``source`` to a new file ``target``, leaving blocks of zeros as holes.

    Qdrant preallocates its write-ahead log and its storage files as sparse files of tens of megabytes;
    written out in full, every copy and restore of a small collection would cost that much disk."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        left = size
        while left > 0:
            block = source.read(min(BLOCK, left))
            if not block:
                raise EOFError(f"{target.name}: the source ended {left} bytes early")
            left -= len(block)
            if on_block is not None:
                on_block(block)
            if block == _ZEROS[:len(block)]:
                out.seek(len(block), os.SEEK_CUR)
            else:
                out.write(block)
        out.truncate(size)
