"""``appliance backup``: the steps.

1. The database must answer: the running appliance's, an external one, or (the appliance stopped) the
   embedded server started for the backup, after checking that this machine's PostgreSQL can read it; so must
   a bundled Qdrant server (started for the backup too when the appliance is stopped).
2. Each pack's part holds its store quiet (nested, so all of them at once), the database snapshot is
   exported inside, each part copies its files, then lets go.
3. ``pg_dump`` of that snapshot; the manifest; the archive, linked into place only when complete.

Everything is staged in a private temporary directory next to the archive and removed afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.backup import archive, postgres
from appliance.backup.home import postgres_pid, supervisord_running
from appliance.backup.manifest import DUMP, FORMAT, FORMAT_VERSION, describe
from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.kernel.contract.backup import BackupPart
from appliance.kernel.protocol.db.rows import one
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.clients import connect_db
from appliance.kernel.runtime.clock import SYSTEM
from appliance.supervise import pgversion
from appliance.supervise.pgserver import temporary_server
from appliance.supervise.plan import POSTGRES_DIR, Plan
from appliance.supervise.qdrantserver import temporary_qdrant

#: Where archives go without ``--output``, under ``APPLIANCE_HOME``.
BACKUPS_DIR = "backups"


class UsageError(ApplianceError):
    """The command cannot be carried out as asked (exit 2); nothing was written."""


@dataclass(frozen=True)
class Created:
    path: Path
    size: int
    seconds: float
    manifest: dict[str, Any]


def archive_name(when: datetime) -> str:
    return f"appliance-backup-{when.astimezone(UTC):%Y%m%dT%H%M%SZ}.tar.gz"


def target_path(config: Config, output: str | None, when: datetime) -> Path:
    """The archive's path: ``--output`` (a new file, or a directory to put it in), else ``HOME/backups``."""
    if output is None:
        folder = config.core.home / BACKUPS_DIR
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder / archive_name(when)
    path = Path(output).absolute()
    if path.is_dir():
        return path / archive_name(when)
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path} exists: an archive never replaces a file")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent} is not a directory")
    return path


def create_backup(config: Config, plan: Plan, target: Path, parts: Sequence[tuple[str, BackupPart]], wait: float,
                  when: datetime) -> Created:
    started = SYSTEM.monotonic()
    with tempfile.TemporaryDirectory(prefix=".appliance-backup-", dir=target.parent) as tmp:
        staging = Path(tmp)
        with database_up(config), bundled_qdrant_up(config, plan):
            facts, infos = _snapshot_and_dump(config, staging, parts, wait)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created": iso(when),
            "appliance_version": __version__,
            "postgres": {"member": DUMP, "database": "embedded" if config.core.database_embedded else "external",
                         **facts},
            "parts": infos,
            "members": describe(staging),
        }
        archive.write(staging, manifest, target, when.timestamp())
    return Created(target, target.stat().st_size, SYSTEM.monotonic() - started, manifest)


def _snapshot_and_dump(config: Config, staging: Path, parts: Sequence[tuple[str, BackupPart]],
                       wait: float) -> tuple[dict[str, Any], dict[str, Any]]:
    with connect_db(config) as conn:
        if one(conn.execute("SELECT to_regclass('schema_migrations')"))[0] is None:
            raise UsageError("the database has no appliance schema (no schema_migrations table): is DATABASE_URL "
                             "right? The appliance creates it at its first start")
    # Not in the snapshot's transaction: its first statement must be the export, which fixes what it sees.
    with postgres.snapshot(config) as snap:
        infos = _save_parts(config, staging, list(parts), snap.take, wait)
        if snap.id is None:
            raise ApplianceError("a backup part never let the database snapshot be taken")
        facts = snap.facts()
        facts.update(postgres.dump(config, snap.id, staging / DUMP))
    return facts, infos


def _save_parts(config: Config, staging: Path, parts: list[tuple[str, BackupPart]], take: Callable[[], None],
                wait: float) -> dict[str, Any]:
    """Each part saved inside the previous one's consistent point, the snapshot inside the last one's: every
    store is quiet at the moment the snapshot is taken."""
    if not parts:
        take()
        return {}
    (name, part), rest = parts[0], parts[1:]
    inner: dict[str, Any] = {}

    def consistent_point() -> None:
        inner.update(_save_parts(config, staging, rest, take, wait))

    (staging / name).mkdir(mode=0o700)
    info = part.save(config, staging / name, consistent_point, wait)
    return {name: info, **inner}


@contextmanager
def bundled_qdrant_up(config: Config, plan: Plan) -> Iterator[None]:
    """The bundled Qdrant server answering for the block: Supervisor's, or (the appliance stopped) one
    started for it."""
    if plan.qdrant != "server" or supervisord_running(config):
        yield
        return
    with temporary_qdrant(config, plan):
        yield


@contextmanager
def database_up(config: Config) -> Iterator[None]:
    """The database answering for the block: as it is, or the stopped embedded server started for it."""
    data = config.core.home / POSTGRES_DIR
    if not config.core.database_embedded or postgres_pid(config) is not None:
        yield
        return
    if not (data / "PG_VERSION").is_file():
        raise UsageError(f"there is no embedded database in {config.core.home} (no {data / 'PG_VERSION'}): "
                         f"is APPLIANCE_HOME right?")
    pgversion.check_data_dir(data)
    with temporary_server(config, data):
        yield
