"""Running ``appliance run`` for tests: start it in a temp ``APPLIANCE_HOME``, talk to it with the real
``supervisorctl``, and make sure nothing it started outlives the test."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from tests.services import free_port, short_tmpdir, wait_until

REPO = Path(__file__).resolve().parents[2]
STANDIN_QDRANT = Path(__file__).with_name("qdrant_standin.py")
SUPERVISORCTL = str(Path(sys.executable).with_name("supervisorctl"))
APP_PROGRAMS = ("redis", "postgres", "qdrant", "worker", "sidecar")


def appliance_home() -> Path:
    """A short temp dir (unix socket paths stay under 107 bytes) that PostgreSQL's user may enter."""
    base = short_tmpdir("app-")
    base.chmod(0o755)
    return base / "home"


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """The machine's environment without any appliance setting, plus ``extra``."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("REDIS_", "DATABASE_", "QDRANT", "APPLIANCE_", "JOBS_", "SCHEDULE_"))}
    keep.update({"APPLIANCE_HOME": str(home), "PORT": str(free_port()), "LOG_FORMAT": "json",
                 "LOG_LEVEL": "info", "PYTHONPATH": str(REPO), "STARTUP_WAIT": "10"})
    keep.update(extra)
    return keep


def file_tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under ``root``: mode, and the sha256 of a file's content."""
    return {str(p.relative_to(root)): (p.lstat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest()
                                       if p.is_file() and not p.is_symlink() else "")
            for p in sorted(root.rglob("*")) if not p.is_socket()}


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``appliance ARGS`` as an operator runs it, in ``env``."""
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def db_url(home: Path) -> str:
    """The embedded database of ``home``, as its ``DATABASE_URL`` default names it."""
    return f"postgresql:///appliance?host={home}/run&user=appliance&passfile={home}/secrets/postgres.pgpass"


def contents(url: str) -> dict[str, list[str]]:
    """Every table's rows (as JSON text, sorted) and every sequence's position."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        found = {t: sorted(r[0] for r in conn.execute(f'SELECT to_jsonb(t)::text FROM "{t}" t')) for t in tables}
        for (name,) in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'").fetchall():
            found[f"sequence {name}"] = [str(conn.execute(f'SELECT last_value, is_called FROM "{name}"').fetchone())]
    return found


def processes_of(home: Path) -> list[tuple[int, str]]:
    """(pid, command line) of live processes started for ``home``: every one of them inherited
    ``APPLIANCE_HOME=<home>`` in its environment, or names the home on its command line."""
    mark = f"APPLIANCE_HOME={home}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes() + b"\0"
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # redis-server rewrites its process title over its environment: its command line names the home
        if state != "Z" and ((b"\0" + mark) in (b"\0" + environ) or str(home) in cmdline):
            found.append((int(entry.name), cmdline))
    return found


class Appliance:
    """One ``appliance run`` process (which becomes supervisord) and its programs."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.home = Path(env["APPLIANCE_HOME"])
        self.port = int(env["PORT"])
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self.out_path = self.home.parent / "appliance.out"
        self._out = open(self.out_path, "wb")  # noqa: SIM115 - the process writes to it until stop() closes it
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "run"], env=env, cwd=REPO,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    # -- supervisorctl ---------------------------------------------------------------------------------
    def ctl(self, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
        """The real ``supervisorctl`` with no flags, from ``cwd`` (the repo root: it finds
        ./supervisord.conf there), with only ``APPLIANCE_HOME`` of the appliance's environment."""
        env = {"PATH": os.environ.get("PATH", ""), "APPLIANCE_HOME": str(self.home)}
        return subprocess.run([SUPERVISORCTL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)

    def status(self) -> dict[str, tuple[str, int | None]]:
        """program -> (state, pid or None), from ``supervisorctl status``."""
        states = {}
        for line in self.ctl("status").stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = int(parts[3].rstrip(",")) if len(parts) > 3 and parts[2] == "pid" else None
                states[parts[0]] = (parts[1], pid)
        return states

    def wait_states(self, wanted: dict[str, str], timeout: float = 60) -> dict[str, tuple[str, int | None]]:
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"appliance exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            states = self.status()
            return states if all(states.get(n, ("", 0))[0] == s for n, s in wanted.items()) else None

        try:
            return wait_until(check, timeout, f"programs {wanted}", interval=0.3)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nstatus: {self.status()}\n{self.output()[-4000:]}") from None

    # -- probes and logs -------------------------------------------------------------------------------
    def health(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5)

    def wait_health(self, timeout: float = 30) -> dict:
        return wait_until(lambda: self.health().json() if self.health().status_code == 200 else None,
                          timeout, "/health")

    def output(self) -> str:
        self._out.flush()
        return self.out_path.read_text(errors="replace")

    def supervisord_log(self) -> list[str]:
        return (self.home / "log" / "supervisord.log").read_text().splitlines()

    def events(self, verb: str, after: str = "") -> list[str]:
        """Program names in the order supervisord logged ``verb`` (``spawned``, ``stopped``), counting only
        lines after the last one containing ``after``."""
        lines = self.supervisord_log()
        if after:
            lines = lines[max(i for i, line in enumerate(lines) if after in line):]
        names = []
        for line in lines:
            marker = f" {verb}: '"
            if marker in line:
                names.append(line.split(marker, 1)[1].split("'", 1)[0])
            elif f" {verb}: " in line:
                names.append(line.split(f" {verb}: ", 1)[1].split()[0])
        return names

    # -- stopping --------------------------------------------------------------------------------------
    def terminate(self, timeout: float = 20) -> tuple[int, float]:
        """SIGTERM to supervisord (what ``docker stop`` sends); returns (exit code, seconds to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def leftovers(self) -> list[tuple[int, str]]:
        """(pid, command line) of live processes this appliance started (``processes_of`` its home)."""
        return processes_of(self.home)

    def zombies(self) -> list[int]:
        """Exited children of supervisord that it has not reaped."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] == "Z" and int(fields[1]) == self.proc.pid:
                found.append(int(entry.name))
        return found

    def close(self) -> None:
        """Stop whatever is left of what this test started, then close files."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid, _ in self.leftovers():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._out.close()
        shutil.rmtree(self.home.parent, ignore_errors=True)
