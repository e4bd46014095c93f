"""The install depends on the lock files only, whatever the package index publishes after them.

``scripts/check-lock`` makes a fresh venv with the interpreter's bundled pip, runs ``scripts/bootstrap-pip`` (the
step ``scripts/install`` and ``Dockerfile.worker`` run before reading a lock), offers a release newer than the pin
of every locked package (wheels it writes into a ``--find-links`` directory: tomorrow's index, made today), and
dry-runs ``pip install --require-hashes`` of each lock, failing when pip would take anything the lock does not pin.

On 2026-12-06 the install broke because the bundled pip (23.2.1), resolving qdrant-client's ``httpx[http2]``
against a lock written without extras, took the newly published httpx 0.29.0: the check with the bundled pip and
such a lock fails the same way on any day (``test_the_check_fails_as_the_install_did_on_2026_12_06``).
"""

from __future__ import annotations

import ensurepip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.appliance.harness import REPO

CHECK = REPO / "scripts" / "check-lock"
LOCKS = [REPO / "requirements.lock", REPO / "requirements-test.lock"]
pytestmark = [pytest.mark.long, pytest.mark.timeout(600)]


def pinned(lock: Path, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", lock.read_text(), re.M)
    assert match, f"{lock.name} pins no {name}"
    return match.group(1)


def check_lock(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *map(str, args)], capture_output=True, text=True,
                          timeout=540)


#: The pip a fresh venv of this interpreter starts with.
BUNDLED = ensurepip.version()
#: pip 23.3 joined a dependency's extra (httpx[http2]) to the lock's pin (httpx==) by itself; older ones do not.
OLD_BUNDLED = tuple(int(part) for part in BUNDLED.split(".")[:2]) < (23, 3)


def test_the_pinned_installer_installs_exactly_what_the_locks_pin():
    """Bundled pip -> scripts/bootstrap-pip -> pip of requirements-bootstrap.lock, which installs every pin of
    both locks and nothing else, with a newer release of each package on offer."""
    pip = pinned(REPO / "requirements-bootstrap.lock", "pip")
    done = check_lock(*LOCKS)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"checking with pip {pip}" in done.stderr, done.stderr[-2000:]
    for lock in LOCKS:
        assert f"{lock}: ok" in done.stderr
    # The venv this suite runs in was made by scripts/install, which ran the same bootstrap.
    version = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout
    assert version.split()[1] == pip, version


def test_the_check_fails_as_the_install_did_on_2026_12_06(tmp_path):
    """The lock as scripts/lock wrote it before (extras stripped: ``httpx==``), read by the bundled pip without
    the bootstrap: pip takes tomorrow's httpx for qdrant-client's ``httpx[http2]``, and the check says so."""
    if not OLD_BUNDLED:
        pytest.skip(f"this interpreter bundles pip {BUNDLED}, which joins extras to pins")
    stripped = tmp_path / "requirements.lock"
    stripped.write_text(re.sub(r"^([A-Za-z0-9._-]+)\[[^\]]*\]==", r"\1==", LOCKS[0].read_text(), flags=re.M))
    done = check_lock("--no-bootstrap", stripped)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "httpx" in done.stderr and "9999.0" in done.stderr, done.stderr[-3000:]
    # The lock as written now is read right even by that pip.
    assert check_lock("--no-bootstrap", LOCKS[0]).returncode == 0


def test_the_check_fails_when_a_lock_misses_a_dependency(tmp_path):
    """With the pinned installer too: a lock without h2 (httpx[http2] needs it) leaves pip a choice."""
    text = LOCKS[0].read_text()
    assert re.search(r"^h2==", text, re.M)
    incomplete = tmp_path / "requirements.lock"
    incomplete.write_text(re.sub(r"^h2==.*?\n(?=\S)", "", text, flags=re.M | re.S))
    done = check_lock(incomplete)
    assert done.returncode == 1
    assert "h2" in done.stderr, done.stderr[-3000:]


def test_scripts_lock_refuses_to_write_what_the_pinned_installer_cannot_install(tmp_path):
    """scripts/lock in a copy of the repository whose installer pin goes back to the bundled pip while extras are
    stripped (the combination that broke the install): it checks its own output, exits 1, names the problem and
    leaves the committed lock files as they were."""
    copy = tmp_path / "repo"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("scripts", "config", "appliance"):
        shutil.copytree(REPO / name, copy / name, ignore=junk)
    for name in ("pyproject.toml", "README.md", "requirements-bootstrap.lock", *(lock.name for lock in LOCKS)):
        shutil.copy2(REPO / name, copy / name)
    if not OLD_BUNDLED:
        pytest.skip(f"this interpreter bundles pip {BUNDLED}, which joins extras to pins")
    installer = copy / "config" / "installer.in"
    installer.write_text(re.sub(r"^pip==\S+", f"pip=={BUNDLED}", installer.read_text(), flags=re.M))
    before = {lock.name: (copy / lock.name).read_bytes() for lock in LOCKS}
    done = subprocess.run([str(copy / "scripts" / "lock"), "--strip-extras"], cwd=copy, capture_output=True,
                          text=True, timeout=540)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "httpx" in done.stderr and "left as they were" in done.stderr, done.stderr[-3000:]
    assert {name: (copy / name).read_bytes() for name in before} == before

