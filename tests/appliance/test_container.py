"""``Dockerfile.worker`` built and run for real with podman (``@pytest.mark.container``; part of the
default run, which ``./scripts/test`` prepares by installing podman, buildah, debootstrap and runc).

No registry is reachable here: the base image is made locally with debootstrap (``tests/appliance/image.py``)
and passed as ``PYTHON_IMAGE``, and the build skips the Qdrant stage (``QDRANT=none``: no Qdrant release can be
downloaded here), so the appliance runs its embedded Qdrant (Qdrant Edge), with its own embedded Redis and
PostgreSQL.

The image is built once per session by ``built_image`` within ``image.BUILD_BUDGET`` (15 minutes: a first
build from nothing downloads a Debian base and every dependency). That build is not what the test is about,
so the per-test timeout applies to the test's own body only (``func_only``): 120 s for starting, probing
and stopping a container.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import pytest

from tests.appliance import image
from tests.appliance.harness import REPO
from tests.conftest import _require
from tests.services import free_port, wait_until

pytestmark = [pytest.mark.container, pytest.mark.long, pytest.mark.timeout(120, func_only=True)]


@pytest.fixture(scope="session")
def built_image() -> str:
    for program in ("podman", "debootstrap", "runc"):
        _require(program)
    return image.prepare(REPO)


def test_image_runs_the_appliance_and_stops_cleanly(built_image):
    """/health from the host, supervisorctl and the runbook's redis-cli GET/DEL with no flags inside, podman
    stop exits 0 within 10 s, and the programs' lines in podman logs."""
    name = f"appliance-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    image.podman("run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}", built_image)
    try:
        def healthy():
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=3)
            return response.json() if response.status_code == 200 else None

        try:
            health = wait_until(healthy, 90, "/health of the container", interval=0.5)
        except TimeoutError:
            raise AssertionError(image.podman("logs", name, check=False).stdout[-4000:]) from None
        assert health["status"] == "ok", health
        assert health["services"]["qdrant"] == "embedded"
        assert image.podman("healthcheck", "run", name, check=False).returncode == 0

        def programs() -> dict[str, str]:
            out = image.podman("exec", name, "supervisorctl", "status", check=False).stdout
            return dict(line.split()[:2] for line in out.splitlines() if line.strip())

        def all_running() -> dict[str, str] | None:
            states = programs()
            return states if all(states.get(p) == "RUNNING" for p in ("redis", "postgres", "worker", "sidecar")) \
                else None

        try:
            states = wait_until(all_running, 30, "RUNNING programs", interval=0.5)
        except TimeoutError:
            raise AssertionError(f"supervisorctl status: {programs()}") from None
        assert states["qdrant"] == "STOPPED", states
        # The runbook's redis-cli, no flags: the wrapper first on PATH reaches the embedded Redis's socket.
        runbook = image.podman("exec", name, "redis-cli", "GET", "lock:campaign-scheduler", check=False)
        assert runbook.returncode == 0 and runbook.stderr == "", runbook.stdout + runbook.stderr
        assert image.podman("exec", name, "redis-cli", "SET", "lock:stuck-job", "host pid=1").stdout.strip() == "OK"
        assert image.podman("exec", name, "redis-cli", "GET", "lock:stuck-job").stdout.strip() == "host pid=1"
        assert image.podman("exec", name, "redis-cli", "DEL", "lock:stuck-job").stdout.strip() == "1"
        assert image.podman("exec", name, "redis-cli", "EXISTS", "lock:stuck-job").stdout.strip() == "0"
        user = image.podman("exec", name, "id", "-u").stdout.strip()
        assert user == "10001"

        started = time.monotonic()
        image.podman("stop", name, timeout=30)
        seconds = time.monotonic() - started
        state = json.loads(image.podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, state
        assert seconds < 10, f"podman stop took {seconds:.1f}s"
        logs = image.podman("logs", name).stdout
        assert '"process": "worker"' in logs and '"msg": "worker started"' in logs
        stops = [line for line in logs.splitlines() if "stopped: " in line or "killing" in line or "reaped" in line]
        assert "stopped: logs (exit status 0)" in logs, stops
        assert not [line for line in stops if "SIGKILL" in line or "terminated by" in line], stops
        assert "stopped: worker" in logs or "stopped: worker" in image.podman("logs", name).stderr
    finally:
        image.podman("rm", "-f", "-v", name, check=False)


def test_the_image_was_installed_by_the_pinned_installer(built_image):
    """The build ran scripts/bootstrap-pip before reading requirements.lock, as scripts/install does: the image's
    venv has the pip and setuptools of requirements-bootstrap.lock, and every locked version."""
    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    locks = (REPO / "requirements-bootstrap.lock").read_text() + (REPO / "requirements.lock").read_text()
    pins = {canonical(name): version
            for name, version in re.findall(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==(\S+)", locks, re.M)}
    listed = image.podman("run", "--rm", built_image, "python3", "-m", "pip", "list",
                          "--disable-pip-version-check", "--format", "json").stdout
    installed = {canonical(item["name"]): item["version"] for item in json.loads(listed)}
    assert installed["pip"] == pins["pip"] and installed["setuptools"] == pins["setuptools"], installed
    assert {name: installed.get(name) for name in pins} == pins
