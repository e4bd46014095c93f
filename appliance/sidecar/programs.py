"""How long the appliance and each of its programs have been up, as supervisord knows it.

``/health``'s ``uptime`` is the appliance's: since supervisord started (the start time of the process in
``$APPLIANCE_HOME/run/supervisord.pid``), so restarting the sidecar alone does not reset it. Each program's
state, pid and uptime come from supervisord's XML-RPC ``getAllProcessInfo`` over its unix socket, read at most
once per ``HEALTH_CACHE_TTL`` and within ``HEALTH_CHECK_TIMEOUT``. A sidecar not run by ``appliance run``
(no supervisord) reports its own process's uptime and no programs.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import xmlrpc.client
from pathlib import Path
from typing import Any, cast

from appliance.kernel.runtime.clock import SYSTEM, Clock


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's unix socket, with a timeout (supervisor's own transport has none)."""

    def __init__(self, path: str, timeout: float):
        super().__init__()
        self.path, self.timeout = path, timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.path, self.timeout)


def process_started(pid: int) -> float | None:
    """The epoch at which process ``pid`` started (Linux ``/proc``), or None when it does not exist."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def supervisord_started(pidfile: Path) -> float | None:
    """When the supervisord of ``pidfile`` started; None when there is none (or the pid is another program's)."""
    try:
        pid = int(pidfile.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return process_started(pid) if b"supervis" in command else None


class Programs:
    """The appliance's start time and supervisord's view of its programs, for ``/health``."""

    def __init__(self, run_dir: Path, ttl: float, timeout: float, clock: Clock = SYSTEM):
        self.socket = run_dir / "supervisor.sock"
        self.started = supervisord_started(run_dir / "supervisord.pid")
        self.ttl, self.timeout, self.clock = ttl, timeout, clock
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, dict[str, Any]] | None] = (float("-inf"), None)

    def uptime(self, fallback: float) -> int:
        """Seconds since the appliance started; ``fallback`` (this process's start) without supervisord."""
        return int(self.clock.time() - (self.started if self.started is not None else fallback))

    def snapshot(self) -> dict[str, dict[str, Any]] | None:
        """program -> {state, pid, uptime}; None without supervisord (or when it does not answer in time)."""
        if self.started is None:
            return None
        with self._lock:
            read_at, value = self._cached
            if self.clock.monotonic() - read_at >= self.ttl:
                value = self._read()
                self._cached = (self.clock.monotonic(), value)
            return value

    def _read(self) -> dict[str, dict[str, Any]] | None:
        proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(self.socket), self.timeout))
        try:
            infos = proxy.supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return None
        finally:
            proxy("close")()
        # getAllProcessInfo answers a list of structs (supervisor's XML-RPC API); xmlrpc types it as any value.
        processes: list[dict[str, Any]] = cast(list[dict[str, Any]], infos)
        return {info["name"]: {"state": info["statename"], "pid": info["pid"] or None,
                               "uptime": int(info["now"] - info["start"]) if info["pid"] else 0}
                for info in processes}
