"""An embedded PostgreSQL data directory written by another major version (an image upgrade that changed the
base image's PostgreSQL) stops ``appliance run`` before anything starts: exit 2, one line naming both
versions and the way out, the directory untouched, supervisord never started.

Only one major version is installed here, so the "other" version is made by writing another number into a
real cluster's ``PG_VERSION``: the check reads that file, as PostgreSQL itself does before refusing it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.supervise import embedded, pgversion
from tests.appliance.harness import REPO, appliance_home, base_env, file_tree

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
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
