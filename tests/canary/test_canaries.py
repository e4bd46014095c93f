"""No secret on any surface, generated from the secret registry.

Every secret the configuration declares (``env.secret``) and a password in every URL setting (``env.url``)
get a unique canary; the names come from the configuration itself, so a secret added tomorrow is covered
without touching this file. A real worker then runs a job that prints, logs and raises all of them; the CLI
(text and ``--json``), a real gunicorn sidecar (every route), the alert webhooks and the log files are
grepped for every canary in every form (plain, URL-encoded, JSON-escaped). Real redis-server and PostgreSQL
of our own, with the canaries as their passwords.

What is stored (``job_runs.error``, the Redis history, dead letters, every other Redis key) is checked too:
masking at write time is the run recorder's part, through ``appliance.kernel.runtime.redaction.Redactor``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, urlsplit

import jwt
import psycopg
import pytest
import redis
from psycopg import sql

from appliance.kernel.contract.packs import load_settings
from tests.canary.jobs import TEXT_FILE
from tests.local_http import JsonHandler, LocalServer
from tests.services import PostgresServer, RedisServer, free_port, wait_until
from tests.sidecar.processes import SidecarProcess, process_env
from tests.sidecar.routes import every_request, sweep
from tests.worker.harness import REPO, WorkerProcess, worker_env, write_jobs_file

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

#: Settings whose URL points at a service this test runs; the other URL settings point nowhere.
SERVICES = ("REDIS_URL", "DATABASE_URL", "QDRANT_URL")
CLI = [("migrate",), ("check-config",), ("check-config", "--json"), ("jobs", "list"), ("jobs", "list", "--json"),
       ("jobs", "history"), ("jobs", "history", "--json"), ("locks", "list"), ("locks", "list", "--json"),
       ("dlq", "list"), ("dlq", "list", "--json")]


def declared(home: Path) -> tuple[frozenset[str], frozenset[str]]:
    """The registry's names: (declared secrets, URL settings), as the configuration reads them."""
    config = load_settings({"APPLIANCE_HOME": str(home)}, env_file=None)
    return config.secret_names, config.url_names


def forms(value: str) -> set[str]:
    return {value, quote(value, safe=""), json.dumps(value)[1:-1]}


def leaks(text: str, canaries: dict[str, str]) -> set[str]:
    return {name for name, value in canaries.items() if any(form in text for form in forms(value))}


class _Hooks(JsonHandler):
    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.received.append(self.rfile.read(length).decode())
        self.send_json(200, {"ok": True})


@dataclass
class Scenario:
    canaries: dict[str, str]
    surfaces: dict[str, str] = field(default_factory=dict)
    at_rest: dict[str, str] = field(default_factory=dict)


def _canaries(secret_names, url_names) -> tuple[dict[str, str], dict[str, str]]:
    """(secret name -> canary, URL setting -> password canary); URL passwords carry characters that URL
    encoding changes, so the encoded form is exercised too."""
    secret = {name: f"cnry-{name.lower().replace('_', '-')}-{secrets.token_hex(16)}" for name in sorted(secret_names)}
    passwords = {name: f"cnry-pw-{name.lower().replace('_', '-')}-{secrets.token_hex(6)}/+x"
                 for name in sorted(url_names - secret_names)}
    return secret, passwords


def _environment(tmp: Path, redis_server, pg: PostgresServer, database: str, hooks: str,
                 secret: dict[str, str], passwords: dict[str, str]) -> dict[str, str]:
    env = {"APPLIANCE_HOME": str(tmp / "home"), "HEALTH_CACHE_TTL": "0", "ALERT_CRITICAL_THRESHOLD": "1",
           "ALERT_SLACK_ENABLED": "true", "LOG_LEVEL": "debug"}
    for name, canary in secret.items():
        env[name] = f"{hooks}/hooks/{canary}" if name.endswith("_URL") else canary
    urls = {"REDIS_URL": f"redis://:{{pw}}@127.0.0.1:{redis_server.port}/0",
            "DATABASE_URL": f"postgresql://appliance:{{pw}}@127.0.0.1:{pg.port}/{database}",
            "QDRANT_URL": f"http://qdrant:{{pw}}@127.0.0.1:{free_port()}"}
    for name, password in passwords.items():
        env[name] = urls.get(name, "http://user:{pw}@127.0.0.1:9/v1").format(pw=quote(password, safe=""))
    return env


def _leaky_text(env: dict[str, str], secret: dict[str, str], passwords: dict[str, str], job_canary: str) -> str:
    """Every setting's value, every URL password bare, and a URL the job built itself."""
    parts = [f"{name}={env[name]}" for name in sorted({*secret, *passwords})]
    parts += [f"password of {name} is {password}" for name, password in passwords.items()]
    parts.append(f"postgresql://crm:{job_canary}@db.example/crm")
    return "; ".join(parts)


def _redis_dump(client: redis.Redis) -> str:
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        value = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                 "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}[kind](key)
        out.append(f"{key}: {value}")
    return "\n".join(out)


def _cli(env: dict[str, str], args: tuple[str, ...]) -> str:
    result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canary")
    secret_names, url_names = declared(tmp / "probe")
    secret, passwords = _canaries(secret_names, url_names)
    job_canary = f"cnry-job-built-url-{secrets.token_hex(8)}"
    redis_server, pg = RedisServer().start(), PostgresServer().start()
    _Hooks.received = []
    hooks = LocalServer(_Hooks, "hooks").start()
    try:
        database = urlsplit(pg.create_database("canary")).path.lstrip("/")
        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE appliance PASSWORD {}").format(sql.Literal(passwords["DATABASE_URL"])))
        redis_server.client().config_set("requirepass", passwords["REDIS_URL"])
        env = _environment(tmp, redis_server, pg, database, hooks.origin, secret, passwords)
        assert load_settings(env, env_file=None).secret_names == secret_names, "declarations must not depend on values"
        (tmp / "leak.txt").write_text(_leaky_text(env, secret, passwords, job_canary))
        jobs_file = write_jobs_file(tmp / "jobs.toml", {"leak": {"callable": "tests.canary.jobs:leak",
                                                                 "schedule": "1s", "max_retries": 0}})
        env = worker_env(env, jobs_file, ["leak"], **{TEXT_FILE: str(tmp / "leak.txt"), "LOG_LEVEL": "debug"})
        result = Scenario({**secret, **passwords, "job-built URL": job_canary})
        for args in CLI[:1]:
            result.surfaces[f"appliance {' '.join(args)}"] = _cli(env, args)
        admin = redis.Redis(port=redis_server.port, password=passwords["REDIS_URL"], decode_responses=True)
        _run_worker_and_sidecar(tmp, env, admin, secret, result)
        for args in CLI[1:]:
            result.surfaces[f"appliance {' '.join(args)}"] = _cli(env, args)
        result.at_rest["redis"] = _redis_dump(admin)
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            rows = conn.execute("SELECT row_to_json(r)::text FROM job_runs r").fetchall()
        result.at_rest["job_runs"] = "\n".join(row[0] for row in rows)
        result.surfaces["alerts"] = "\n".join(_Hooks.received)
        yield result
    finally:
        hooks.stop()
        redis_server.cleanup()
        pg.cleanup()


def _run_worker_and_sidecar(tmp: Path, env: dict[str, str], admin: redis.Redis, secret: dict[str, str],
                            result: Scenario) -> None:
    worker = WorkerProcess(env, tmp / "worker.log")
    sidecar = SidecarProcess(process_env(env), tmp / "sidecar.log")
    try:
        wait_until(lambda: admin.hlen("appliance:dlq") >= 1 and len(_Hooks.received) >= 2, 40,
                   "a dead letter and both alerts from the leaking job")
        sidecar.wait_ready()
        dead_id = admin.hkeys("appliance:dlq")[0]
        config = load_settings(env, env_file=None)
        requests = every_request(config, {"name": "leak", "dead_id": dead_id, "filename": "dashboard.js"})
        token = jwt.encode({"sub": "ops", "role": "admin", "exp": 4102444800}, secret["JWT_SECRET"], algorithm="HS256")
        credentials = [{}, {"Authorization": f"Bearer {secret['ADMIN_TOKEN']}"}, {"Authorization": f"Bearer {token}"}]
        # Read-only routes first, then the ones that change state (retry and drop take the dead letter away).
        requests.sort(key=lambda r: (r[0] != "GET", r[1]))
        result.surfaces["sidecar responses"] = "\n".join(sweep(sidecar.url, requests, credentials))
    finally:
        sidecar.stop()
        worker.terminate()
    result.surfaces["worker log"] = worker.log_path.read_text()
    result.surfaces["sidecar log"] = sidecar.log_path.read_text()


def test_the_registry_names_every_declared_secret(tmp_path):
    """The issue's own examples are among what the configuration declares (a floor, not the list used)."""
    secret_names, url_names = declared(tmp_path)
    assert {"SMTP_PASSWORD", "WHATSAPP_API_TOKEN", "VOICE_API_TOKEN", "ADMIN_TOKEN", "JWT_SECRET",
            "OPENAI_API_KEY", "QDRANT_API_KEY", "ALERT_WEBHOOK_URL", "ALERT_SLACK_WEBHOOK_URL"} <= secret_names
    assert set(SERVICES) <= url_names


def test_the_scenario_reached_every_surface(scenario):
    """Guards against a vacuous pass: the job failed with the canaries, and each surface saw masked text."""
    assert "request failed" in scenario.surfaces["worker log"]
    assert scenario.surfaces["alerts"].count("leak") >= 2
    for name, text in scenario.surfaces.items():
        assert text.strip(), name
    assert "***" in scenario.surfaces["appliance dlq list --json"] + scenario.surfaces["sidecar responses"]


@pytest.mark.parametrize("surface", ["appliance " + " ".join(args) for args in CLI] +
                         ["sidecar responses", "worker log", "sidecar log", "alerts"])
def test_no_canary_on_any_surface(scenario, surface):
    assert not leaks(scenario.surfaces[surface], scenario.canaries), surface


@pytest.mark.parametrize("store", ["job_runs", "redis"])
def test_no_canary_at_rest(scenario, store):
    """job_runs.error, the Redis history, dead letters and every other key: masked when written."""
    assert "***" in scenario.at_rest[store], f"{store} must hold the failed run's masked error"
    assert not leaks(scenario.at_rest[store], scenario.canaries), store
