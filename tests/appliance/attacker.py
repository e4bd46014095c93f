"""A local attacker with a shell on the machine of a running appliance.

``python3 attacker.py TARGETS.json`` tries everything TARGETS names (directories, files, unix sockets, TCP
ports, processes, the sidecar's HTTP port) with whatever it can loot along the way (a password file it can
read, a token in an environment it can read), and prints one JSON document: every attempt with whether it
got anything, and which canary secrets it saw anywhere. The test runs it as ``nobody`` and as the
database's own user, where every attempt must fail, and as root, where the same attempts succeed (the
positive control that shows the attempts work). Standard library only: the system's ``python3`` runs it as
any user.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 5


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: how supervisorctl speaks XML-RPC to supervisord."""

    def __init__(self, path: str):
        super().__init__("localhost", timeout=TIMEOUT)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(self.path)


class Attacker:
    def __init__(self, targets: dict):
        self.t = targets
        self.attempts: list[dict] = []
        self.loot: dict[str, str] = {}

    def record(self, kind: str, target: str, ok: bool, detail: str = "") -> None:
        self.attempts.append({"kind": kind, "target": target, "ok": ok, "detail": detail[:160]})

    def attempt(self, kind: str, target: str, action) -> object:
        """Run ``action``; an OSError (EACCES and the like) means the attempt got nothing."""
        try:
            result = action()
        except (OSError, http.client.HTTPException, subprocess.SubprocessError) as exc:
            self.record(kind, target, False, f"{type(exc).__name__}: {exc}")
            return None
        self.record(kind, target, True)
        return result

    # -- the filesystem and the processes ---------------------------------------------------------------
    def files(self) -> None:
        for path in self.t["ancestors"]:
            self.attempt("traverse", path, lambda p=path: os.listdir(p))
        for path in self.t["dirs"]:
            self.attempt("list", path, lambda p=path: os.listdir(p))
        for path in self.t["files"]:
            data = self.attempt("read", path, lambda p=path: Path(p).read_bytes())
            if isinstance(data, bytes):
                self.loot[path] = data.decode(errors="replace")
        for path in self.t["sockets"]:
            self.attempt("connect", path, lambda p=path: self._connect(p))

    def _connect(self, path: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)

    def processes(self) -> None:
        for pid in self.t["pids"]:
            environ = self.attempt("environ", str(pid), lambda p=pid: Path(f"/proc/{p}/environ").read_bytes())
            if isinstance(environ, bytes):
                self.loot[f"environ:{pid}"] = environ.decode(errors="replace").replace("\0", "\n")
            self.attempt("fd", str(pid), lambda p=pid: os.listdir(f"/proc/{p}/fd"))
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            leaked = [name for name, value in self.t["canaries"].items() if value in cmdline]
            self.record("cmdline-secret", str(pid), bool(leaked), ",".join(leaked))

    def looted(self, name: str) -> str:
        """A variable's value from any environment read so far, or ''."""
        for key, text in self.loot.items():
            if key.startswith("environ:"):
                for line in text.splitlines():
                    if line.startswith(f"{name}="):
                        return line.split("=", 1)[1]
        return ""

    def pg_password(self) -> str:
        text = self.loot.get(self.t["pgpass"], "")
        return text.strip().rsplit(":", 1)[-1] if text else ""

    # -- the services ---------------------------------------------------------------------------------------
    def run(self, kind: str, target: str, argv: list[str], wanted: str, env: dict | None = None) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                                  env={**os.environ, **(env or {})})
        except (OSError, subprocess.SubprocessError) as exc:
            self.record(kind, target, False, str(exc))
            return
        self.record(kind, target, done.returncode == 0 and wanted in done.stdout, (done.stdout + done.stderr)[-160:])

    def databases(self) -> None:
        socket_dir, port = self.t["pg_socket_dir"], self.t["pg_port"]
        password = {"PGPASSWORD": self.pg_password()} if self.pg_password() else {}
        for user in ("appliance", "postgres"):
            self.run(f"psql-socket-{user}", socket_dir,
                     ["psql", "-h", socket_dir, "-p", str(port), "-U", user, "-d", "appliance", "-w", "-Atc",
                      "SELECT 'in'"], "in", {"PGCONNECT_TIMEOUT": "3", **password})
        for tcp in self.t["tcp_ports"]:
            self.run("psql-tcp", str(tcp), ["psql", "-h", "127.0.0.1", "-p", str(tcp), "-U", "appliance", "-d",
                                             "appliance", "-w", "-Atc", "SELECT 'in'"], "in",
                     {"PGCONNECT_TIMEOUT": "3", **password})
            self.run("redis-tcp", str(tcp), ["redis-cli", "-h", "127.0.0.1", "-p", str(tcp), "PING"], "PONG")
        self.run("redis-socket", self.t["redis_socket"], ["redis-cli", "-s", self.t["redis_socket"], "PING"], "PONG")

    def supervisor(self) -> None:
        path = self.t["supervisor_socket"]

        def xmlrpc() -> None:
            body = ("<?xml version='1.0'?><methodCall><methodName>supervisor.getAllProcessInfo</methodName>"
                    "<params></params></methodCall>")
            conn = UnixHTTPConnection(path)
            conn.request("POST", "/RPC2", body, {"Content-Type": "text/xml"})
            answer = conn.getresponse()
            text = answer.read().decode()
            if answer.status != 200 or "statename" not in text:
                raise OSError(f"HTTP {answer.status}")

        self.attempt("xmlrpc", path, xmlrpc)
        self.run("supervisorctl", path, [self.t["python"], "-c", "from supervisor.supervisorctl import main; main()",
                                         "-s", f"unix://{path}", "status"], "RUNNING",
                 {"PYTHONPATH": self.t["supervisor_path"]})

    def http(self) -> None:
        base = f"http://127.0.0.1:{self.t['sidecar_port']}"
        token = self.looted("ADMIN_TOKEN")
        for method, path in self.t["admin_routes"]:
            headers = {"Authorization": f"Bearer {token or 'guess'}"}
            self.attempt("admin-api", f"{method} {path}", lambda m=method, p=path, h=headers: self._get(base + p, m, h))
        for path in self.t["public_routes"]:
            try:
                text = self._get(base + path, "GET", {}, any_status=True)
            except OSError as exc:
                self.record("public-leak", path, False, str(exc))
                continue
            leaked = [n for n, v in self.t["canaries"].items() if v in text] + \
                     (["APPLIANCE_HOME"] if self.t["home"] in text else [])
            self.record("public-leak", path, bool(leaked), ",".join(leaked))
        if self.t.get("qdrant_port"):
            key = self.looted("QDRANT__SERVICE__API_KEY") or self.looted("QDRANT_API_KEY")
            self.attempt("qdrant-api", "/collections", lambda: self._get(
                f"http://127.0.0.1:{self.t['qdrant_port']}/collections", "GET", {"api-key": key or "guess"}))

    def _get(self, url: str, method: str, headers: dict, any_status: bool = False) -> str:
        request = urllib.request.Request(url, method=method, headers=headers, data=b"" if method != "GET" else None)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                return answer.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            if any_status:
                return exc.read().decode(errors="replace")
            raise OSError(f"HTTP {exc.code}") from None

    def report(self) -> dict:
        everything = "\n".join(self.loot.values())
        seen = sorted(name for name, value in self.t["canaries"].items() if value in everything)
        return {"uid": os.geteuid(), "attempts": self.attempts, "seen": seen}


def main(path: str) -> int:
    with open(path) as handle:
        attacker = Attacker(json.load(handle))
    attacker.files()
    attacker.processes()
    attacker.databases()
    attacker.supervisor()
    attacker.http()
    json.dump(attacker.report(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
