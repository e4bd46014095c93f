"""Real Redis and PostgreSQL servers for tests, each in its own temp directory, started and stopped by us.

Tests may kill, pause (SIGSTOP) and restart them. Nothing here touches the machine's shared instances.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from appliance.supervise import embedded, pgaccess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_tmpdir(prefix: str) -> Path:
    """A temp dir with a short path: unix socket paths must stay under 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def wait_until(check, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the service is not up yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last})")


class RedisServer:
    """A ``redis-server`` on a loopback port and a unix socket, with append-only persistence."""

    def __init__(self, extra_args: tuple[str, ...] = ()) -> None:
        self.dir = short_tmpdir("rds-")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        #: More ``redis-server`` options (TLS ports, replication), appended to the command line.
        self.extra_args = extra_args

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_url(self) -> str:
        return f"unix://{self.dir / embedded.REDIS_SOCKET}"

    def start(self) -> RedisServer:
        argv = embedded.redis_argv(self.dir, self.dir, port=self.port) + list(self.extra_args)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.client().ping(), 10, "redis-server")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=2)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.resume()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL cluster made with ``initdb`` in a temp dir, on a unix socket and a loopback port."""

    def __init__(self, extra_args: tuple[str, ...] = ()) -> None:
        #: More ``postgres -c`` settings (TLS), appended to the command line.
        self.extra_args = extra_args
        self.dir = short_tmpdir("pg-")
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = embedded.run_as_user()
        self.proc: subprocess.Popen | None = None
        self._n = 0

    def url(self, database: str = embedded.PG_DATABASE) -> str:
        return embedded.postgres_url(self.dir, self.passfile, self.port, database)

    def tcp_url(self, database: str = embedded.PG_DATABASE) -> str:
        return f"postgresql://{embedded.PG_USER}@127.0.0.1:{self.port}/{database}?passfile={self.passfile}"

    @property
    def passfile(self) -> Path:
        return self.dir / "pgpass"

    def secure(self) -> None:
        """The appliance's own access rules (``appliance.supervise.pgaccess``), plus CREATEDB for the application role,
        so that tests can have a database each (which their role then owns, as in the appliance)."""
        password = pgaccess.load_password(self.dir / "password", self.passfile)
        pgaccess.secure_cluster(self.data, self.user, password)
        pgaccess.single_user(self.data, self.user, "postgres", f'ALTER ROLE "{embedded.PG_USER}" CREATEDB\n\n')

    def start(self) -> PostgresServer:
        embedded.init_postgres(self.data, self.dir, self.user)
        self.secure()
        argv = embedded.postgres_argv(self.data, self.dir, self.user, port=self.port, listen="127.0.0.1")
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", *self.extra_args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._accepts, 30, "postgres")
        return self

    def _accepts(self) -> bool:
        psycopg.connect(self.url("postgres"), connect_timeout=1).close()
        return True

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, mode: signal.Signals = signal.SIGINT) -> None:
        """SIGINT is PostgreSQL's fast shutdown; SIGKILL simulates a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(mode)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
