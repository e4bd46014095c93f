"""What of the appliance runs in an ``APPLIANCE_HOME``, told from what its processes leave there: supervisord's
pid file and control socket, each worker's liveness lock (``run/workers/*.lock``, flocked for the worker's
life), the embedded PostgreSQL's ``postmaster.pid`` and the embedded Redis's socket.

Only this machine's processes can be seen: replicas sharing an external database are the operator's to stop.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from appliance.config import Config
from appliance.supervise.plan import POSTGRES_DIR

SUPERVISORD_PID = "supervisord.pid"
SUPERVISORD_SOCKET = "supervisor.sock"
REDIS_SOCKET = "redis.sock"
WORKERS_DIR = "workers"


def running(config: Config) -> list[str]:
    """What runs in the configuration's home, one phrase each; empty when nothing does."""
    run = config.core.run_dir
    found = []
    if supervisord_running(config):
        pid = live_pid(run / SUPERVISORD_PID, "supervis")
        found.append(f"supervisord ({f'pid {pid} in ' if pid else ''}{run / SUPERVISORD_PID})")
    found += [f"a worker ({lock})" for lock in sorted((run / WORKERS_DIR).glob("*.lock")) if locked(lock)]
    pid = postgres_pid(config)
    if pid is not None:
        found.append(f"the embedded PostgreSQL (pid {pid})")
    if answers(run / REDIS_SOCKET):
        found.append(f"the embedded Redis ({run / REDIS_SOCKET})")
    return found


def supervisord_running(config: Config) -> bool:
    run = config.core.run_dir
    return live_pid(run / SUPERVISORD_PID, "supervis") is not None or answers(run / SUPERVISORD_SOCKET)


def postgres_pid(config: Config) -> int | None:
    """The embedded PostgreSQL's postmaster, when one is alive."""
    return live_pid(config.core.home / POSTGRES_DIR / "postmaster.pid", "postgres")


def live_pid(pid_file: Path, program: str) -> int | None:
    """The pid on the file's first line when that process exists and is ``program``.

    A pid file left by a killed container names a pid that the next container reuses for something else (often
    1, this very command in ``docker run IMAGE appliance restore``): a process of another name is not it."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's (PostgreSQL's own user)
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # cannot tell: alive is the safe answer
    return pid if program.encode() in command else None


def locked(path: Path) -> bool:
    """Whether another process holds an flock on ``path`` (taken and dropped at once when free)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def answers(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket ``path``."""
    if not path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
