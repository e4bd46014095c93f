"""Real processes for the sidecar's process tests: ``appliance sidecar`` under gunicorn, and a TCP listener
that accepts connections and never answers (a dependency that hangs)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import httpx

from tests.services import free_port, wait_until
from tests.worker.harness import REPO, WorkerProcess

#: Variables of the machine's environment that must not leak into a test's sidecar or worker.
_FOREIGN = ("REDIS_", "DATABASE_", "QDRANT_", "ADMIN_", "JWT_", "OPENAI_", "ALERT_", "SCHEDULE_", "HEALTH_",
            "SIDECAR_", "APPLIANCE_", "JOBS_", "PROMETHEUS_")


def process_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """The machine's environment without appliance settings, plus ``base`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN) and k != "PORT"}
    env.update(base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update({"LOG_FORMAT": "json", "LOG_LEVEL": "info"})
    env.update(extra)
    return env


class SidecarProcess(WorkerProcess):
    """``python -m appliance sidecar`` on a free port; ``url`` is where it serves."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = int(env.setdefault("PORT", str(free_port())))
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(env, log_path, args=("sidecar",))

    def wait_ready(self, timeout: float = 20) -> SidecarProcess:
        def answers() -> bool:
            assert self.alive(), self.log_path.read_text()[-3000:]
            return httpx.get(self.url + "/health/live", timeout=1).status_code == 200

        wait_until(answers, timeout, "gunicorn serving the sidecar")
        return self

    def stop(self) -> None:
        if self.alive():
            self.terminate()
        elif not self._log.closed:
            self._log.close()


class SilentListener:
    """Accepts TCP connections on a loopback port and never sends a byte (a hung PostgreSQL or Qdrant)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()

    def __enter__(self) -> SilentListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
