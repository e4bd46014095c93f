"""A running appliance against a local attacker, and each program's share of the secrets.

One ``appliance run`` (as root, as the other process tests) with the embedded Redis and PostgreSQL, the
Qdrant stand-in (``tests/appliance/qdrant_standin.py``: no registry here carries the Qdrant binary; it checks
the API key like the real server), the worker and the sidecar, and a unique canary value in every secret
the configuration declares. Then ``tests/appliance/attacker.py`` tries every directory, file and socket
under ``APPLIANCE_HOME``, every TCP port the appliance listens on, every process it runs
(``/proc/PID/environ``, ``fd``, ``cmdline``), supervisord's socket (XML-RPC and the real supervisorctl),
PostgreSQL (``psql``) and Redis (``redis-cli``), and the sidecar's HTTP port:

- as ``nobody``, every attempt gets nothing and no canary is seen;
- as the database server's own user, nothing beyond its own files and processes;
- as root, the same attempts succeed (the positive control: the attempts work, so their failure above means
  something).

Honesty about the temp dirs: ``APPLIANCE_HOME`` is created 0755 by the test (as ``/app/data`` is in the
image) under a 0755 directory in ``/tmp``, and the attacker must be able to list both: the protection comes
from the modes the appliance gives its own directories, files and sockets, not from a parent it happens to
sit in.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import stat
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import supervisor

from appliance.kernel.contract.packs import load_settings
from appliance.supervise.embedded import PG_SUPERUSER
from appliance.supervise.launch import ADMIN_SECRETS, BASE_NAMES, BASE_PREFIXES, TRACE_EXPORT_SECRETS
from tests.appliance.harness import APP_PROGRAMS, STANDIN_QDRANT, Appliance, appliance_home, base_env
from tests.services import free_port, short_tmpdir
from tests.worker.harness import write_jobs_file

pytestmark = pytest.mark.process

ATTACKER = Path(__file__).with_name("attacker.py")
#: The system's interpreter: any user may run it (the project's venv may sit under root's home).
SYSTEM_PYTHON = "/usr/bin/python3"
TICK = {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s", "lock_ttl": 3}
ADMIN_ROUTES = [("GET", "/api/jobs"), ("POST", "/api/jobs/tick/trigger"), ("GET", "/api/locks"),
                ("GET", "/api/dead-letters"), ("GET", "/api/audit")]
#: What a shell in a program's command adds by itself (``sh -c`` around tail): not from the appliance.
SHELL_ADDS = frozenset({"PWD", "SHLVL", "_"})
#: The Qdrant program's own variables, and those the stand-in's ``#!/usr/bin/env python3`` adds when
#: ``python3`` on PATH is a pyenv shim (a shell script).
STANDIN_ADDS = ("QDRANT__", "PYENV_", "_PYENV_")
#: Open to anyone: the probes, the metrics, and the dashboard's page (an empty shell: its data comes from the
#: admin API, with the credential the page asks for).
PUBLIC_ROUTES = ["/health", "/health/ready", "/health/live", "/metrics", "/admin"]
#: What the attacker must get as root and never as anyone else, and what nobody gets at all.
ROOT_GETS = ("traverse", "list", "read", "connect", "environ", "fd", "psql-socket-appliance", "redis-socket",
             "xmlrpc", "supervisorctl", "admin-api", "qdrant-api")
NOBODY_GETS = ("psql-socket-postgres", "psql-tcp", "redis-tcp", "cmdline-secret", "public-leak")


def canaries(home: Path) -> dict[str, str]:
    """A unique value for every secret the configuration declares (read from the declarations themselves, so
    a new secret is covered the day it is added); URL secrets get URLs."""
    names = load_settings({"APPLIANCE_HOME": str(home)}, env_file=None).secret_names
    values = {}
    for name in sorted(names):
        value = f"canary-{name.lower().replace('_', '-')}-{secrets.token_hex(16)}"
        values[name] = f"http://127.0.0.1:9/hook/{value}" if name.endswith("_URL") else value
    return values


@dataclass
class Running:
    app: Appliance
    canaries: dict[str, str]
    health: dict


@pytest.fixture(scope="module")
def running():
    home = appliance_home()
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    jobs = write_jobs_file(home.parent / "jobs.toml", {"tick": TICK})
    values = canaries(home)
    env = base_env(home, QDRANT_BIN=str(STANDIN_QDRANT), QDRANT_URL=f"http://127.0.0.1:{free_port()}",
                   APPLIANCE_JOBS_FILE=str(jobs), JOBS_ENABLED="tick", OPENAI_BASE_URL="http://127.0.0.1:9/v1",
                   **values)
    app = Appliance(env)
    try:
        app.wait_states({name: "RUNNING" for name in (*APP_PROGRAMS, "logs", "fatal")})
        yield Running(app, values, app.wait_health())
    finally:
        app.close()


def _parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    parents = _parents()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += [child for child, parent in parents.items() if parent == current]
    return found


def environ(pid: int) -> str:
    return (Path("/proc") / str(pid) / "environ").read_bytes().decode(errors="replace")


def listening_ports(pids: list[int]) -> set[int]:
    """TCP ports in LISTEN state owned by ``pids`` (``/proc/net/tcp*`` inodes matched to their fds)."""
    ports = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    found = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in (Path("/proc") / str(pid) / "fd").iterdir()]
        except OSError:
            continue
        found |= {ports[link[8:-1]] for link in links if link.startswith("socket:[") and link[8:-1] in ports}
    return found


def test_each_program_gets_only_its_share_of_the_secrets(running):
    """/proc/PID/environ of every supervised process (children included: gunicorn's workers, PostgreSQL's
    backends): services get no secret and only the base variables; qdrant its own API key; the worker all
    but the admin credentials; the sidecar the admin credentials, the Qdrant key and the trace exporter's
    headers (it exports its requests' spans)."""
    every = set(running.canaries)
    wanted = {"redis": set(), "postgres": set(), "logs": set(), "fatal": set(), "qdrant": {"QDRANT_API_KEY"},
              "worker": every - ADMIN_SECRETS, "sidecar": ADMIN_SECRETS | TRACE_EXPORT_SECRETS | {"QDRANT_API_KEY"}}
    status = running.app.status()
    checked = 0
    for program, secrets_wanted in wanted.items():
        pids = tree(status[program][1])
        for pid in pids:
            text = environ(pid)
            seen = {name for name, value in running.canaries.items() if value in text}
            assert seen == secrets_wanted, (program, pid)
            names = {line.split("=", 1)[0] for line in text.split("\0") if "=" in line}
            if program not in ("worker", "sidecar"):
                assert {n for n in names if n not in BASE_NAMES | SHELL_ADDS and not n.startswith(BASE_PREFIXES)
                        and not (program == "qdrant" and n.startswith(STANDIN_ADDS))} == set(), program
            checked += 1
        if program == "sidecar":
            withheld = next(line for line in environ(pids[0]).split("\0") if line.startswith("APPLIANCE_WITHHELD"))
            assert set(withheld.split("=", 1)[1].split(",")) == every - secrets_wanted
    assert checked >= len(wanted) + 3, "gunicorn's workers and PostgreSQL's backends are checked too"
    supervisord = environ(running.app.proc.pid)
    assert all(value in supervisord for value in running.canaries.values()), "the source has them all"
    assert running.health["status"] == "ok"
    assert running.health["knowledge"]["embedder"] == "openai", "withheld from the sidecar, yet known to be set"


def _targets(running: Running, workdir: Path) -> Path:
    home = running.app.home
    dirs, files, sockets, owners = [], [], [], {}
    for root, subdirs, names in os.walk(home):
        for name in subdirs + names:
            path = os.path.join(root, name)
            info = os.lstat(path)
            owners[path] = info.st_uid
            if stat.S_ISDIR(info.st_mode):
                dirs.append(path)
            elif stat.S_ISREG(info.st_mode):
                files.append(path)
            elif stat.S_ISSOCK(info.st_mode):
                sockets.append(path)
    pids = tree(running.app.proc.pid)
    run = home / "run"
    targets = {
        "ancestors": [str(home.parent), str(home)], "dirs": dirs, "files": files, "sockets": sockets,
        "pids": pids, "tcp_ports": sorted(listening_ports(pids)), "canaries": running.canaries, "home": str(home),
        "pgpass": str(home / "secrets" / "postgres.pgpass"), "pg_socket_dir": str(run), "pg_port": 5432,
        "redis_socket": str(run / "redis.sock"), "supervisor_socket": str(run / "supervisor.sock"),
        "python": SYSTEM_PYTHON, "supervisor_path": str(Path(supervisor.__file__).parents[1]),
        "sidecar_port": running.app.port, "qdrant_port": int(running.app.env["QDRANT_URL"].rsplit(":", 1)[1]),
        "admin_routes": ADMIN_ROUTES, "public_routes": PUBLIC_ROUTES, "owners": owners,
    }
    targets_file = workdir / "targets.json"
    targets_file.write_text(json.dumps(targets))
    targets_file.chmod(0o644)
    return targets_file


def attack(targets: Path, user: str | None) -> dict:
    argv = [SYSTEM_PYTHON, str(ATTACKER), str(targets)]
    done = subprocess.run(["runuser", "-u", user, "--", *argv] if user else argv, capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_local_attacker_gets_nothing_and_root_gets_everything(running):
    workdir = short_tmpdir("atk-")
    workdir.chmod(0o755)
    try:
        targets_path = _targets(running, workdir)
        targets = json.loads(targets_path.read_text())
        nobody, database_user, root = (attack(targets_path, user) for user in ("nobody", PG_SUPERUSER, None))
    finally:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    assert nobody["uid"] == pwd.getpwnam("nobody").pw_uid and root["uid"] == 0
    assert set(targets["tcp_ports"]) == {running.app.port, targets["qdrant_port"]}, \
        "no PostgreSQL or Redis port: only the sidecar and Qdrant listen on TCP"
    kinds = Counter(a["kind"] for a in nobody["attempts"])
    assert set(kinds) == set(ROOT_GETS) | set(NOBODY_GETS)
    assert kinds["read"] >= 12 and kinds["connect"] >= 3 and kinds["environ"] >= 10, kinds

    # nobody: the parents are open to it, and yet nothing below them is.
    got = [a for a in nobody["attempts"] if a["ok"] != (a["kind"] == "traverse")]
    assert got == [], got
    assert nobody["seen"] == []

    # The database server's own user: its own data, socket and processes, nothing else.
    pg_uid = pwd.getpwnam(PG_SUPERUSER).pw_uid
    for attempt in database_user["attempts"]:
        if attempt["ok"] and attempt["kind"] != "traverse":
            owner = targets["owners"].get(attempt["target"])
            if attempt["kind"] in ("environ", "fd"):
                owner = os.stat(f"/proc/{attempt['target']}").st_uid
            assert owner == pg_uid, attempt
    assert database_user["seen"] == []
    assert not any(a["ok"] for a in database_user["attempts"] if a["kind"] in ("psql-socket-appliance", "redis-socket",
                                                                              "xmlrpc", "admin-api", "qdrant-api"))

    # root: the same attempts, and they work.
    tried = [(a["kind"], a["target"]) for a in nobody["attempts"]]
    assert [(a["kind"], a["target"]) for a in root["attempts"]] == tried
    failed = [a for a in root["attempts"] if a["kind"] in ROOT_GETS and not a["ok"]]
    assert failed == [], failed
    leaked = [a for a in root["attempts"] if a["kind"] in NOBODY_GETS and a["ok"]]
    assert leaked == [], "even root cannot log in as the superuser, and nothing leaks in public"
    assert set(root["seen"]) == set(running.canaries)


def test_every_file_and_directory_the_appliance_made_is_private(running):
    """Logs (supervisord's own and every program's, created by supervisord), sockets, Redis's append-only
    files, PostgreSQL's data, metrics, secrets: no group or other bits anywhere below APPLIANCE_HOME."""
    home = running.app.home
    loose = []
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(root) / name
            if stat.S_IMODE(path.lstat().st_mode) & 0o077:
                loose.append(f"{oct(stat.S_IMODE(path.lstat().st_mode))} {path.relative_to(home)}")
    assert loose == []
    logs = {path.name for path in (home / "log").iterdir()}
    assert {"supervisord.log", "worker-error.log", "sidecar-error.log", "postgres-error.log"} <= logs
