"""The bundled Qdrant server started for a moment, outside Supervisor: for ``appliance backup`` and
``appliance restore`` while the appliance is stopped, which reach the collection through the server's API.

It runs as the ``qdrant`` program would (``appliance.supervise.plan``): the same binary, configuration file,
storage, ports and API key, and only the program's share of the environment (``appliance.supervise.launch``).
Callers make sure the appliance is stopped, so that no other server uses the storage.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from appliance.config import Config, process_environment
from appliance.errors import ApplianceError
from appliance.kernel.runtime.clock import SYSTEM
from appliance.supervise.launch import program_env
from appliance.supervise.plan import Plan, qdrant_dirs, qdrant_server_env

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@contextmanager
def temporary_qdrant(config: Config, plan: Plan) -> Iterator[None]:
    """The bundled server from the moment it is ready (``/readyz``) until the block ends; then SIGTERM."""
    assert plan.qdrant_bin is not None, "only the bundled server is started here"
    for path in qdrant_dirs(config.core.home):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = program_env("qdrant", {**process_environment(), **qdrant_server_env(config, plan)})
    server = subprocess.Popen([plan.qdrant_bin, "--config-path", str(plan.qdrant_conf)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _await_ready(plan.qdrant_url, server)
        yield
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if server.stderr is not None:
            server.stderr.close()


def _await_ready(url: str, server: subprocess.Popen) -> None:
    deadline = SYSTEM.monotonic() + START_TIMEOUT
    while server.poll() is None and SYSTEM.monotonic() < deadline:
        try:
            if httpx.get(f"{url.rstrip('/')}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        SYSTEM.sleep(0.1)
    if server.poll() is not None:
        said = server.stderr.read().decode(errors="replace")[-500:] if server.stderr else ""
        raise ApplianceError(f"the bundled Qdrant server exited at start: {said.strip()}")
    raise ApplianceError(f"the bundled Qdrant server was not ready within {START_TIMEOUT:.0f}s")
