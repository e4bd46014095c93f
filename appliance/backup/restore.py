"""``appliance restore``: the steps. Nothing in the home changes until every check has passed.

1. Read the whole archive: the manifest first (not ours, or too new: refused), then every member against its
   size and sha256 (damaged: refused).
2. Check the target: nothing of the appliance runs in the home (a bundled Qdrant server is then started for
   the restore); this ``pg_restore`` reads the dump; this appliance knows the archive's schema (the next start
   migrates an older one); every part of the archive has a pack here that restores it, and each pack's check
   passes (same Qdrant mode, store free, server answering).
3. Extract into a private directory in the home, checking every member again.
4. The database: with the embedded PostgreSQL, a new cluster (this machine's PostgreSQL, the home's password)
   in ``postgres.restoring``, filled by ``pg_restore`` in one transaction. With an external ``DATABASE_URL``,
   ``pg_restore --clean`` in one transaction, which replaces the archived objects at once.
5. Each pack puts its store in place, keeping the one there before beside it; then the new cluster takes the
   place of ``postgres``, which is kept as ``postgres.before-restore-STAMP`` (a directory of another major
   version too: this is the upgrade path).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.backup import archive, home, postgres
from appliance.backup.manifest import ArchiveRefused
from appliance.config import Config
from appliance.kernel.contract.backup import BackupPart, BackupRefused
from appliance.kernel.protocol.db.migrate import available
from appliance.supervise import pgversion
from appliance.supervise.pgserver import setup_cluster, temporary_server
from appliance.supervise.plan import POSTGRES_DIR, Plan
from appliance.supervise.prepare import make_dirs, make_home
from appliance.supervise.qdrantserver import temporary_qdrant

RESTORING = "restoring"


def refuse_if_running(config: Config) -> None:
    busy = home.running(config)
    if busy:
        raise BackupRefused(f"the appliance is running in {config.core.home}: {', '.join(busy)}. Stop it first "
                            f"(docker stop, Ctrl-C, systemctl stop), then restore")


def check(config: Config, manifest: dict[str, Any], parts: Sequence[tuple[str, BackupPart]]) -> None:
    """Raise ``BackupRefused`` unless the archive can be restored into this configuration (the packs' own
    checks aside, which may need their server); changes nothing."""
    pg = manifest["postgres"]
    here = pgversion.installed_major("pg_restore")
    if pg["dump_major"] > here:
        raise ArchiveRefused(f"the dump was made by pg_dump {pg['dump_major']}; this appliance's pg_restore is "
                             f"PostgreSQL {here}, which cannot read it: restore with an image of PostgreSQL "
                             f"{pg['dump_major']} or newer")
    known = max((m.version for m in available()), default=0)
    if pg["schema_version"] > known:
        raise ArchiveRefused(f"the archive's database schema is version {pg['schema_version']}, newer than this "
                             f"appliance knows ({known}; archive from appliance {manifest.get('appliance_version')}): "
                             f"restore with that version or a newer one")
    names = {name for name, _ in parts}
    foreign = sorted(set(manifest["parts"]) - names)
    if foreign:
        raise ArchiveRefused(f"the archive holds data of {', '.join(foreign)}, which no installed pack restores")


def restore_archive(config: Config, plan: Plan, path: Path, parts: Sequence[tuple[str, BackupPart]],
                    when: datetime) -> list[str]:
    """Steps 1 to 5; returns lines for the operator."""
    manifest = archive.verify(path)
    refuse_if_running(config)
    check(config, manifest, parts)
    with ExitStack() as stack:
        if plan.qdrant == "server":
            # The bundled server is the appliance's (stopped): its collection is restored through its API.
            make_home(config)
            stack.enter_context(temporary_qdrant(config, plan))
        for name, part in parts:
            if name in manifest["parts"]:
                part.check(config, manifest["parts"][name])
        return _restore(config, plan, path, manifest, parts, when)


def _restore(config: Config, plan: Plan, path: Path, manifest: dict[str, Any],
             parts: Sequence[tuple[str, BackupPart]], when: datetime) -> list[str]:
    aside = f"before-restore-{when.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    make_dirs(config, plan)
    staging = config.core.home / f".restore-{aside}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        archive.extract(path, staging)
        dump = staging / manifest["postgres"]["member"]
        if not config.core.database_embedded:
            postgres.restore(config, dump, clean=True)
            return ["postgres: the external database restored (each archived object replaced)",
                    *_parts(config, staging, manifest, parts, aside)]
        new = _new_cluster(config, dump)
        try:
            said = _parts(config, staging, manifest, parts, aside)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        return [_replace(config, new, aside), *said]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _parts(config: Config, staging: Path, manifest: dict[str, Any], parts: Sequence[tuple[str, BackupPart]],
           aside: str) -> list[str]:
    said = []
    for name, part in parts:
        if name in manifest["parts"]:
            said += part.restore(config, staging / name, manifest["parts"][name], aside)
        else:
            said.append(f"{name}: not in the archive; left as it is")
    return said


def _new_cluster(config: Config, dump: Path) -> Path:
    """A new cluster of the installed PostgreSQL beside the home's, filled from ``dump``; removed on failure.
    Built before anything is replaced, since it is the step most likely to fail."""
    new = config.core.home / f"{POSTGRES_DIR}.{RESTORING}"
    shutil.rmtree(new, ignore_errors=True)  # what a restore cut short left
    try:
        setup_cluster(config, new)
        with temporary_server(config, new):
            postgres.restore(config, dump, clean=False)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return new


def _replace(config: Config, new: Path, aside: str) -> str:
    data = config.core.home / POSTGRES_DIR
    said = "postgres: the embedded database restored into a new cluster"
    if data.exists():
        kept = data.with_name(f"{POSTGRES_DIR}.{aside}")
        os.rename(data, kept)
        said += f"; the one there before is kept in {kept}"
    os.rename(new, data)
    return said
