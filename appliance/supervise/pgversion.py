"""Which PostgreSQL major version wrote the embedded data directory, and which one this machine runs.

A data directory is readable only by the major version that wrote it (``PG_VERSION`` names it). An image
upgrade that changes the base image's PostgreSQL would otherwise start a server that exits at once, which
Supervisor restarts until the program goes FATAL: a crash loop whose cause is buried in ``postgres-error.log``.
``appliance run`` checks the two numbers before anything starts and stops with one line naming both and the
way out (docs/operations.md "Upgrading PostgreSQL"); ``appliance backup`` refuses the same way, since this
machine's ``pg_dump`` cannot start the old server either.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.supervise.embedded import find_pg_bin

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class MajorVersionMismatch(ApplianceError):
    """The embedded data directory was written by another PostgreSQL major version than the one installed."""


def tool_version(name: str) -> str:
    """What ``NAME --version`` says (``pg_dump (PostgreSQL) 15.20 (Debian ...)``), of the newest installed."""
    done = subprocess.run([find_pg_bin(name), "--version"], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


def major_of(version_line: str) -> int:
    """15 for ``postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)``."""
    found = _VERSION.search(version_line)
    if found is None:
        raise ApplianceError(f"cannot read a PostgreSQL version from {version_line!r}")
    return int(found.group(1))


def installed_major(name: str = "postgres") -> int:
    """The major version of the installed server (or of another of its programs: ``pg_restore``)."""
    return major_of(tool_version(name))


def data_major(data_dir: Path) -> int | None:
    """The major version that wrote ``data_dir`` (its ``PG_VERSION``), or None when there is no cluster."""
    try:
        text = (data_dir / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text.split(".")[0])
    except ValueError:
        raise ApplianceError(f"{data_dir / 'PG_VERSION'} does not name a PostgreSQL version: {text[:40]!r}") from None


def check_data_dir(data_dir: Path) -> None:
    """Raise ``MajorVersionMismatch`` (one line: both versions and what to do) unless ``data_dir`` is absent or
    was written by the installed major version. Reads only: nothing in ``data_dir`` changes."""
    written = data_major(data_dir)
    if written is None:
        return
    installed = installed_major()
    if written != installed:
        raise MajorVersionMismatch(
            f"the embedded PostgreSQL data directory {data_dir} was written by PostgreSQL {written}, but this "
            f"appliance has PostgreSQL {installed}, which cannot read it; nothing was started and the directory "
            f"is unchanged. Run `appliance backup` with the previous image (PostgreSQL {written}), then "
            f"`appliance restore ARCHIVE` with this one (it moves the old directory aside), or go back to the "
            f"previous image. See docs/operations.md, \"Upgrading PostgreSQL\"")
