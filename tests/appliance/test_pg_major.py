"""An embedded PostgreSQL data directory written by another major version (an image upgrade that changed the
base image's PostgreSQL) stops ``appliance run`` (and ``appliance backup``) before anything starts: exit 2, one
line naming both versions and the way out, the directory untouched, supervisord never started; the upgrade
path of docs/operations.md gets the appliance going again with every row.

Only one major version is installed here, so the "other" version is made by writing another number into a
real cluster's ``PG_VERSION``: the check reads that file, as PostgreSQL itself does before refusing it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.supervise import embedded, pgversion
from tests.appliance.harness import REPO, Appliance, appliance_home, base_env, cli, contents, db_url, file_tree

pytestmark = pytest.mark.process


def old_cluster(home: Path) -> tuple[Path, int]:
    """A real cluster whose ``PG_VERSION`` names a major version other than the installed one."""
    data = home / "postgres"
    home.mkdir(parents=True)
    home.chmod(0o711)
    embedded.init_postgres(data, home / "run", embedded.run_as_user())
    other = pgversion.installed_major() - 1
    (data / "PG_VERSION").write_text(f"{other}\n")
    return data, other


def test_run_refuses_a_data_directory_of_another_major_version():
    home = appliance_home()
    try:
        data, other = old_cluster(home)
        before = file_tree(data)
        done = subprocess.run([sys.executable, "-m", "appliance", "run"], env=base_env(home), cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        said = [line for line in done.stderr.splitlines() if line.startswith("appliance:")]
        assert len(said) == 1, done.stderr
        installed = pgversion.installed_major()
        for words in (str(data), f"PostgreSQL {other}", f"PostgreSQL {installed}", "appliance backup",
                      "appliance restore", "Upgrading PostgreSQL"):
            assert words in said[0], said[0]
        assert file_tree(data) == before, "the directory is left as it was (pg_hba.conf included)"
        assert not (home / "run" / "supervisord.pid").exists()
        assert (home / "log" / "supervisord.log").read_text() == "", "supervisord never started"
        assert not list((home / "log").glob("postgres*.log")) or all(
            p.read_text() == "" for p in (home / "log").glob("postgres*.log"))
        backup = cli(base_env(home), "backup", timeout=60)
        assert backup.returncode == 2 and f"PostgreSQL {other}" in backup.stderr, backup.stderr
        assert file_tree(data) == before, "nor does a backup start it"
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)


def test_the_upgrade_path_backup_before_restore_after(tmp_path):
    """docs/operations.md "Upgrading PostgreSQL": with the old image, ``appliance backup`` (here with the
    appliance stopped); with the new one, ``appliance run`` refuses the old directory, ``appliance restore``
    builds a cluster of the installed version and keeps the old directory beside it, and the appliance starts
    with every row there."""
    home = appliance_home()
    env = base_env(home, IS_WORKER="false")  # no job changes a row: what was archived stays comparable
    started = [Appliance(env)]
    old = started[0]
    try:
        old.wait_states({"postgres": "RUNNING", "sidecar": "RUNNING"})
        assert cli(env, "seed-demo").returncode == 0
        before = contents(db_url(home))
        assert old.terminate()[0] == 0
        made = cli(env, "backup", "--output", str(tmp_path))
        assert made.returncode == 0, made.stderr
        other = pgversion.installed_major() - 1
        (home / "postgres" / "PG_VERSION").write_text(f"{other}\n")  # what the new image finds
        assert cli(env, "run", timeout=60).returncode == 2

        restored = cli(env, "restore", made.stdout.splitlines()[-1])
        assert restored.returncode == 0, restored.stdout + restored.stderr
        (kept,) = home.glob("postgres.before-restore-*")
        assert (kept / "PG_VERSION").read_text().strip() == str(other) and str(kept) in restored.stdout
        assert (home / "postgres" / "PG_VERSION").read_text().strip() == str(pgversion.installed_major())
        started.append(new := Appliance(env))
        new.wait_states({"postgres": "RUNNING", "sidecar": "RUNNING"})
        assert contents(db_url(home)) == before
    finally:
        for app in reversed(started):
            app.close()
