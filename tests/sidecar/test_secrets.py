"""No secret in any response or log line: canary values in every secret setting, in service URL passwords and
in job output are grepped from every endpoint's answers (with and without credentials, with Redis up and down)
and from the log of a real gunicorn sidecar."""

from __future__ import annotations

import secrets

import jwt
import pytest
import redis

from appliance.kernel.contract.packs import load_settings
from tests.services import free_port
from tests.sidecar.cluster import Cluster
from tests.sidecar.processes import SidecarProcess, process_env
from tests.sidecar.routes import every_request, sweep

pytestmark = pytest.mark.process

#: Canaries in service URL passwords and in a URL a job builds itself (not a setting).
URL_CANARIES = {
    "REDIS_URL": "canary-redis-pw-4b8c2d",
    "DATABASE_URL": "canary-pg-pw-6f0e3a",
    "QDRANT_URL": "canary-qdrant-pw-1c7d",
    "JOB_URL_PASSWORD": "canary-job-url-pw-8a2f",
}


def _declared_secrets(base: dict[str, str]) -> dict[str, str]:
    """One canary per secret the configuration declares (the registry's own names, not a copied list);
    JWT_SECRET needs 32 characters, and webhook URLs must be URLs."""
    names = load_settings(base, env_file=None).secret_names
    return {name: f"canary-{name.lower().replace('_', '-')}-{secrets.token_hex(12)}" for name in sorted(names)}


def _setting(name: str, canary: str) -> str:
    return f"http://127.0.0.1:9/hooks/{canary}" if name.endswith("_URL") else canary


def _env(sidecar_env, redis_server, postgres_server) -> tuple[dict[str, str], dict[str, str]]:
    """The environment, and every canary by the name it was put in."""
    database = sidecar_env["DATABASE_URL"].split("?")[0].rsplit("/", 1)[1]
    declared = _declared_secrets(sidecar_env)
    env = {
        **sidecar_env,
        "REDIS_URL": f"redis://:{URL_CANARIES['REDIS_URL']}@127.0.0.1:{redis_server.port}/0",
        "DATABASE_URL": f"postgresql://appliance:{URL_CANARIES['DATABASE_URL']}@127.0.0.1:{postgres_server.port}/{database}",
        "QDRANT_URL": f"http://qdrant:{URL_CANARIES['QDRANT_URL']}@127.0.0.1:{free_port()}",
        **{name: _setting(name, canary) for name, canary in declared.items()},
        "LOG_LEVEL": "debug",
        "HEALTH_CACHE_TTL": "0",
    }
    assert load_settings(env, env_file=None).secret_names == set(declared), \
        "the declarations must not depend on the values"
    return env, {**declared, **URL_CANARIES}


def _leaky_state(cluster: Cluster, env: dict[str, str], canaries: dict[str, str]) -> str:
    """A job whose runs and dead letter carry secrets in their error text (jobs may print anything): every
    setting's value, every service URL's bare password, and a URL the job built itself."""
    cluster.publish("tick")
    cluster.beat(jobs=["tick"])
    error = (f"connect to postgresql://app:{canaries['JOB_URL_PASSWORD']}@db/crm failed; "
             + "; ".join(f"{name}={env.get(name)}" for name in canaries if name in env)
             + "; ".join(f"{name} password {canaries[name]}" for name in ("REDIS_URL", "DATABASE_URL", "QDRANT_URL")))
    cluster.run("tick", outcome="failure", error=error)
    cluster.start_run("tick")
    return cluster.state.dead_letters.add("tick", error=error, traceback=error)


def _requests(config, dead_id: str) -> list[tuple[str, str]]:
    result = every_request(config, {"name": "tick", "dead_id": dead_id, "filename": "dashboard.js"})
    result += [("GET", "/api/history?job=tick"), ("GET", "/api/history?limit=abc"), ("GET", "/nope"),
               ("DELETE", "/api/locks/tick?force=maybe"), ("POST", "/health")]
    return result


def _credentials(canaries: dict[str, str]) -> list[dict[str, str]]:
    secret = canaries["JWT_SECRET"]
    token = jwt.encode({"sub": "ops", "role": "admin", "exp": 4102444800}, secret, algorithm="HS256")
    viewer = jwt.encode({"sub": "v", "role": "viewer", "exp": 4102444800}, secret, algorithm="HS256")
    return [{}, {"Authorization": f"Bearer {canaries['ADMIN_TOKEN']}"}, {"Authorization": f"Bearer {token}"},
            {"Authorization": f"Bearer {viewer}"}, {"Authorization": "Bearer wrong"}]


def test_canary_secrets_never_appear_in_responses_or_logs(tmp_path, sidecar_env, redis_server, postgres_server):
    env, canaries = _env(sidecar_env, redis_server, postgres_server)
    with redis_server.client() as plain:
        plain.config_set("requirepass", canaries["REDIS_URL"])
    with redis.Redis.from_url(env["REDIS_URL"], decode_responses=True) as client:
        dead_id = _leaky_state(Cluster(client), env, canaries)
    requests = _requests(load_settings(env, env_file=None), dead_id)
    credentials = _credentials(canaries)
    sidecar = SidecarProcess(process_env(env), tmp_path / "sidecar.log")
    try:
        sidecar.wait_ready()
        outputs = sweep(sidecar.url, requests, credentials)
        redis_server.kill()
        outputs += sweep(sidecar.url, requests, credentials)
    finally:
        sidecar.stop()
    log = sidecar.log_path.read_text()
    everything = "\n".join(outputs) + log
    assert len(outputs) == 2 * len(credentials) * len(requests) and len(requests) > 15
    assert "admin action" in log and "***" in everything, "the sweep must have seen the secrets being masked"
    assert ' 200 ' in everything and ' 401 ' in everything and ' 403 ' in everything and ' 503 ' in everything
    leaked = {name for name, value in canaries.items() if value in everything}
    assert not leaked, leaked
    assert "Traceback" not in everything
