"""The manifest: the archive's first member (``manifest.json``), which says what the archive is and holds.

```
{"format": "appliance-backup", "format_version": 1, "created": ISO, "appliance_version": "0.1.0",
 "postgres": {"member": "postgres.dump", "format": "custom", "server_version": "15.20 ...", "server_major": 15,
              "pg_dump": "pg_dump (PostgreSQL) 15.20 ...", "dump_major": 15, "database": "embedded",
              "schema_version": 50},
 "parts": {"knowledge": {"qdrant": "embedded", "collections": {...}, ...}},
 "members": {"postgres.dump": {"size": N, "sha256": HEX}, "knowledge/...": {...}, ...}}
```

Every other member is listed under ``members`` with its size and sha256; a part's files are under a
directory named after the part. No URL, password or other secret is written here.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from appliance.errors import ApplianceError
from appliance.kernel.contract.backup import BackupRefused

FORMAT = "appliance-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DUMP = "postgres.dump"
_HEX = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024


class ArchiveRefused(BackupRefused):
    """Not an archive this appliance restores (another file, a newer format or schema); nothing was touched."""


class ArchiveDamaged(ApplianceError):
    """The archive is one of ours but cannot be trusted: unreadable, truncated, or a checksum differs."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def describe(root: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` by its member name (a relative POSIX path): size and sha256."""
    return {path.relative_to(root).as_posix(): {"size": path.stat().st_size, "sha256": sha256_of(path)}
            for path in sorted(root.rglob("*")) if path.is_file()}


def valid_name(name: str) -> bool:
    """A member name extraction cannot turn into a path outside its directory."""
    path = PurePosixPath(name)
    return (bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name
            and path.as_posix() == name and name != MANIFEST)


def parse(raw: bytes) -> dict[str, Any]:
    """The manifest, checked for the shape restore relies on; ``ArchiveRefused`` when it is not ours or too
    new, ``ArchiveDamaged`` when it is ours but malformed."""
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ArchiveRefused(f"not an appliance backup: {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveRefused(f"not an appliance backup: {MANIFEST} does not say format {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ArchiveDamaged(f"{MANIFEST}: format_version {version!r} is not a version")
    if version > FORMAT_VERSION:
        raise ArchiveRefused(f"the archive has format version {version}, written by a newer appliance "
                             f"({manifest.get('appliance_version')}); this one reads version {FORMAT_VERSION}: "
                             f"restore it with that version or a newer one")
    _check_members(manifest.get("members"))
    postgres, parts = manifest.get("postgres"), manifest.get("parts")
    if not isinstance(postgres, dict) or postgres.get("member") not in manifest["members"]:
        raise ArchiveDamaged(f"{MANIFEST}: no PostgreSQL dump among the members")
    for key in ("server_major", "dump_major", "schema_version"):
        if not isinstance(postgres.get(key), int):
            raise ArchiveDamaged(f"{MANIFEST}: postgres.{key} is missing")
    if not isinstance(parts, dict) or not all(isinstance(v, dict) for v in parts.values()):
        raise ArchiveDamaged(f"{MANIFEST}: parts is not an object of objects")
    return manifest


def _check_members(members: object) -> None:
    if not isinstance(members, dict) or not members:
        raise ArchiveDamaged(f"{MANIFEST}: no members listed")
    for name, entry in members.items():
        if not valid_name(name):
            raise ArchiveDamaged(f"{MANIFEST}: member name {name!r} is not a plain relative path")
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or entry["size"] < 0
                or not isinstance(entry.get("sha256"), str) or not _HEX.match(entry["sha256"])):
            raise ArchiveDamaged(f"{MANIFEST}: member {name!r} has no size and sha256")
