"""The archive file: a gzip-compressed tar whose first member is the manifest, then every member it lists.

Written under a temporary name next to the target and linked into place when complete, so an archive that
exists is whole, and one never replaces another. Read in one pass that checks every member against the
manifest before anything is restored, then once more to extract, checking again (the file may have changed
in between). Compressed because Qdrant's files are mostly preallocated zeros; extraction leaves them sparse.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from appliance.backup.manifest import MANIFEST, ArchiveDamaged, ArchiveRefused, parse
from appliance.kernel.contract.backup import write_sparse

GZIP_MAGIC = b"\x1f\x8b"
#: The manifest is small; a first member claiming more is not ours.
MANIFEST_LIMIT = 16 * 1024 * 1024
CHUNK = 1024 * 1024
#: What a damaged stream raises (an OSError of the disk is no sign of damage and is left to propagate).
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def write(staging: Path, manifest: dict[str, Any], target: Path, mtime: float) -> None:
    """The archive of ``manifest``'s members (files under ``staging``) at ``target``, which must not exist."""
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
                _add(tar, MANIFEST, json.dumps(manifest, indent=2).encode(), mtime)
                for name in manifest["members"]:
                    path = staging / name
                    info = _info(name, path.stat().st_size, mtime)
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
            raw.flush()
            os.fsync(raw.fileno())
        _place(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _place(partial: Path, target: Path) -> None:
    """``partial`` becomes ``target``, which must not exist: a hard link, unlike a rename, fails rather than
    replace a file. Where the file system has no hard links, a rename after looking."""
    try:
        os.link(partial, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if target.exists():
            raise FileExistsError(errno.EEXIST, "an archive never replaces a file", str(target)) from None
        os.rename(partial, target)


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(mtime)
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    tar.addfile(_info(name, len(data), mtime), io.BytesIO(data))


@contextmanager
def _reading(path: Path) -> Iterator[tuple[tarfile.TarFile, dict[str, Any]]]:
    """The archive opened as a stream, its manifest read and parsed; read errors become ``ArchiveDamaged``."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(2)
    except OSError as exc:
        raise ArchiveRefused(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if magic != GZIP_MAGIC:
        raise ArchiveRefused(f"{path} is not an appliance backup (not a gzip-compressed tar)")
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile() or first.size > MANIFEST_LIMIT:
                found = "nothing" if first is None else repr(first.name)
                raise ArchiveRefused(f"{path} is not an appliance backup (its first member is {found}, "
                                     f"not {MANIFEST})")
            raw = tar.extractfile(first)
            assert raw is not None, "a regular file has content"
            yield tar, parse(raw.read())
    except _READ_ERRORS as exc:
        raise ArchiveDamaged(f"{path} cannot be read to its end ({type(exc).__name__}: {exc}): the archive is "
                             f"damaged or truncated") from None


def _members(tar: tarfile.TarFile, manifest: dict[str, Any]) -> Iterator[tuple[tarfile.TarInfo, dict[str, Any]]]:
    """Every member after the manifest with its manifest entry; each listed member exactly once, nothing else."""
    listed: dict[str, Any] = manifest["members"]
    seen: set[str] = set()
    while (member := tar.next()) is not None:  # iterating the TarFile would start again at the manifest
        entry = listed.get(member.name)
        if entry is None or member.name in seen or not member.isfile():
            raise ArchiveDamaged(f"the archive holds {member.name!r}, which its manifest does not list once as a file")
        if member.size != entry["size"]:
            raise ArchiveDamaged(f"{member.name}: {member.size} bytes, the manifest says {entry['size']}")
        seen.add(member.name)
        yield member, entry
    missing = sorted(set(listed) - seen)
    if missing:
        raise ArchiveDamaged(f"the archive lacks {len(missing)} member(s) its manifest lists, e.g. {missing[0]}")


def _mismatch(name: str) -> ArchiveDamaged:
    return ArchiveDamaged(f"{name}: its sha256 differs from the manifest's: the archive is damaged")


def verify(path: Path) -> dict[str, Any]:
    """The manifest, once every member has been read and found as the manifest describes it."""
    with _reading(path) as (tar, manifest):
        for member, entry in _members(tar, manifest):
            source = tar.extractfile(member)
            assert source is not None
            digest = hashlib.sha256()
            while block := source.read(CHUNK):
                digest.update(block)
            if digest.hexdigest() != entry["sha256"]:
                raise _mismatch(member.name)
    return manifest


def extract(path: Path, into: Path) -> dict[str, Any]:
    """Every member into the existing directory ``into`` (0700 directories, 0600 files, zeros left as holes),
    checked against the manifest again; returns the manifest."""
    with _reading(path) as (tar, manifest):
        for member, entry in _members(tar, manifest):
            target = into / member.name
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            digest = hashlib.sha256()
            write_sparse(source, target, member.size, on_block=digest.update)
            if digest.hexdigest() != entry["sha256"]:
                raise _mismatch(member.name)
    return manifest
