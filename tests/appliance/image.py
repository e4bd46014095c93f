"""Building and running ``Dockerfile.worker`` with podman on a machine without a container registry.

What this machine needs (see docs/operations.md, "Building the image without a registry"): the ``runc``
runtime (crun refuses hybrid cgroups), fixed ulimits (root here cannot raise rlimits), ``--format docker``
(the OCI format drops HEALTHCHECK), and a base image made locally with debootstrap from the Debian mirror
the machine's apt sources name. The base image's root filesystem is cached as a tarball under
``/var/tmp`` so reruns skip debootstrap; podman's layer cache keeps rebuilds of unchanged steps fast.

Building is not the behaviour under test, so it has its own budget (``BUILD_BUDGET``), separate from the
tests' timeouts: ``prepare()`` runs every step (debootstrap, import, base image, ``Dockerfile.worker``) against
one deadline, each subprocess bounded by what is left of it, and fails naming the step that used it up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CACHE = Path("/var/tmp/appliance-image-cache")
RAW_BASE_IMAGE = "localhost/appliance-base-raw:bookworm-python3"
BASE_IMAGE = "localhost/appliance-base:bookworm-python3"
#: This machine's extra TLS roots and pip settings (it reaches the package index through a TLS-inspecting
#: proxy); the local base image trusts what the machine trusts. Public certificates, no secrets.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
PIP_CONF = Path("/etc/pip.conf")
IMAGE = "localhost/appliance:test"
SUITE = "bookworm"
#: Python, venv support and TLS roots: what the official Python slim image has and the Dockerfile uses.
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
#: The whole build from nothing: debootstrap and the base image, then Dockerfile.worker's apt-get and pip
#: install of every dependency over the network. Measured on a 2-core machine of this project at load 1:
#: 45 s + 69 s; a rebuild from podman's layer cache 12 s. The budget allows a slow mirror and a busy machine
#: several times over; it is the build's bound, never a test's.
BUILD_BUDGET = 900.0
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""


def env() -> dict[str, str]:
    """The environment for podman: our containers.conf (runc, ulimits) on top of the machine's."""
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", "--runtime", "runc", *args], env=env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return done


def apt_mirror() -> str:
    """The Debian mirror of this machine's apt sources (deb822 ``URIs:`` or one-line ``deb`` form)."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for text in texts:
        for match in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in match.group(1):
                return match.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", legacy.read_text(), re.M):
            return match.group(1)
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list(.d)")


class Budget:
    """One deadline shared by the steps of a build."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self, step: str) -> float:
        """Seconds left for ``step``; raises when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"image build used up its budget of {self.seconds:g} s before {step}")
        return left


def prepare(repo: Path, budget: float = BUILD_BUDGET) -> str:
    """The image of ``repo``'s ``Dockerfile.worker``, built (with its base image) within ``budget`` seconds."""
    deadline = Budget(budget)
    try:
        return build(repo, ensure_base_image(deadline), deadline)
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"image build used up its budget of {budget:g} s in: {' '.join(map(str, exc.cmd))[:300]}") \
            from None


def ensure_base_image(budget: Budget) -> str:
    """A Debian bookworm image with Python 3 that trusts this machine's TLS roots, in podman; built once
    (the debootstrap root filesystem is cached as a tarball), then reused."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if podman("image", "exists", RAW_BASE_IMAGE, check=False).returncode != 0:
        tarball = CACHE / f"{SUITE}-python3-rootfs.tar"
        if not tarball.exists():
            _debootstrap(tarball, budget)
        podman("import", str(tarball), RAW_BASE_IMAGE, timeout=budget.left("the base image's import"))
    context = Path(tempfile.mkdtemp(prefix="base-", dir=CACHE))
    try:
        (context / "cas").mkdir()
        for cert in LOCAL_CAS.glob("*.crt"):
            shutil.copy(cert, context / "cas" / cert.name)
        (context / "pip.conf").write_text(PIP_CONF.read_text() if PIP_CONF.exists() else "")
        (context / "Containerfile").write_text(
            f"FROM {RAW_BASE_IMAGE}\n"
            "COPY cas/ /usr/local/share/ca-certificates/\n"
            "COPY pip.conf /etc/pip.conf\n"
            # debootstrap's one-line sources.list duplicates the copied deb822 sources.
            "RUN update-ca-certificates && rm -f /etc/apt/sources.list\n")
        podman("build", "--format", "docker", "-t", BASE_IMAGE, str(context), timeout=budget.left("the base image"))
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return BASE_IMAGE


def _debootstrap(tarball: Path, budget: Budget) -> None:
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, str(root),
                        apt_mirror()], check=True, capture_output=True, timeout=budget.left("debootstrap"))
        # The machine's apt sources (same release), so RUN apt-get in the Dockerfile finds packages.
        sources = root / "etc" / "apt" / "sources.list.d"
        sources.mkdir(parents=True, exist_ok=True)
        for path in Path("/etc/apt/sources.list.d").glob("*.sources"):
            shutil.copy(path, sources / path.name)
            (root / "etc" / "apt" / "sources.list").unlink(missing_ok=True)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True,
                       timeout=budget.left("the root filesystem's tarball"))
        partial.replace(tarball)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build(repo: Path, base: str, budget: Budget) -> str:
    """``Dockerfile.worker`` built from ``base`` without the Qdrant stage (no registry to pull it from)."""
    podman("build", "--format", "docker", "-f", str(repo / "Dockerfile.worker"),
           "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", "QDRANT=none", "-t", IMAGE, str(repo),
           timeout=budget.left("Dockerfile.worker"))
    return IMAGE
