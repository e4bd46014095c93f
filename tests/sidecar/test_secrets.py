"""No secret in any response or log line: canary values in every secret setting, in service URL passwords and
in job output are grepped from every endpoint's answers (with and without credentials, with Redis up and down)
and from the log of a real gunicorn sidecar."""

from __future__ import annotations

import re

import httpx
import jwt
import pytest
import redis

from appliance.config import load_config
from appliance.sidecar import create_app
from tests.sidecar.cluster import Cluster
from tests.sidecar.processes import SidecarProcess, process_env
from tests.services import free_port

pytestmark = pytest.mark.process

CANARIES = {
    "ADMIN_TOKEN": "canary-admin-7f3a9c2e51",
    "JWT_SECRET": "canary-jwt-secret-b64d0e8f2a7c41d9e3f5a6b7",
    "OPENAI_API_KEY": "sk-canary-openai-3c8e1f0a",
    "QDRANT_API_KEY": "canary-qdrant-key-9d2b7e",
    "ALERT_WEBHOOK_URL": "canary-webhook-path-5e1a",
    "REDIS_PASSWORD": "canary-redis-pw-4b8c2d",
    "PG_PASSWORD": "canary-pg-pw-6f0e3a",
    "QDRANT_URL_PASSWORD": "canary-qdrant-pw-1c7d",
    "JOB_URL_PASSWORD": "canary-job-url-pw-8a2f",
}


def _env(sidecar_env, redis_server, postgres_server) -> dict[str, str]:
    database = sidecar_env["DATABASE_URL"].split("?")[0].rsplit("/", 1)[1]
    return {
        **sidecar_env,
        "REDIS_URL": f"redis://:{CANARIES['REDIS_PASSWORD']}@127.0.0.1:{redis_server.port}/0",
        "DATABASE_URL": f"postgresql://appliance:{CANARIES['PG_PASSWORD']}@127.0.0.1:{postgres_server.port}/{database}",
        "QDRANT_URL": f"http://qdrant:{CANARIES['QDRANT_URL_PASSWORD']}@127.0.0.1:{free_port()}",
        "ADMIN_TOKEN": CANARIES["ADMIN_TOKEN"],
        "JWT_SECRET": CANARIES["JWT_SECRET"],
        "OPENAI_API_KEY": CANARIES["OPENAI_API_KEY"],
        "QDRANT_API_KEY": CANARIES["QDRANT_API_KEY"],
        "ALERT_WEBHOOK_URL": f"http://127.0.0.1:9/hooks/{CANARIES['ALERT_WEBHOOK_URL']}",
        "LOG_LEVEL": "debug",
        "HEALTH_CACHE_TTL": "0",
    }


def _leaky_state(cluster: Cluster) -> str:
    """A job whose runs and dead letter carry secrets in their error text (jobs may print anything)."""
    cluster.publish("tick")
    cluster.beat(jobs=["tick"])
    error = (f"connect to postgresql://app:{CANARIES['JOB_URL_PASSWORD']}@db/crm failed; "
             f"token {CANARIES['ADMIN_TOKEN']}; key {CANARIES['OPENAI_API_KEY']}")
    cluster.run("tick", outcome="failure", error=error)
    cluster.start_run("tick")
    return cluster.state.add_dead_letter({"job": "tick", "error": error, "traceback": CANARIES["QDRANT_API_KEY"]})


def _requests(config, dead_id: str) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, with real names in place of URL variables."""
    app = create_app(config)
    try:
        rules = list(app.url_map.iter_rules())
    finally:
        app.extensions["appliance"].close()
    values = {"name": "tick", "dead_id": dead_id, "filename": "dashboard.js"}
    result = []
    for rule in rules:
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values[m.group(1)], rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            result.append((method, path))
    result += [("GET", "/api/history?job=tick"), ("GET", "/api/history?limit=abc"), ("GET", "/nope"),
               ("DELETE", "/api/locks/tick?force=maybe"), ("POST", "/health")]
    return result


def _credentials() -> list[dict[str, str]]:
    token = jwt.encode({"sub": "ops", "role": "admin", "exp": 4102444800}, CANARIES["JWT_SECRET"], algorithm="HS256")
    viewer = jwt.encode({"sub": "v", "role": "viewer", "exp": 4102444800}, CANARIES["JWT_SECRET"], algorithm="HS256")
    return [{}, {"Authorization": f"Bearer {CANARIES['ADMIN_TOKEN']}"}, {"Authorization": f"Bearer {token}"},
            {"Authorization": f"Bearer {viewer}"}, {"Authorization": "Bearer wrong"}]


def _sweep(url: str, requests: list[tuple[str, str]]) -> list[str]:
    outputs = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for headers in _credentials():
            for method, path in requests:
                response = http.request(method, path, headers=headers)
                outputs.append(f"{method} {path} {response.status_code} {dict(response.headers)}\n{response.text}")
    return outputs


def test_canary_secrets_never_appear_in_responses_or_logs(tmp_path, sidecar_env, redis_server, postgres_server):
    with redis_server.client() as plain:
        plain.config_set("requirepass", CANARIES["REDIS_PASSWORD"])
    env = _env(sidecar_env, redis_server, postgres_server)
    with redis.Redis.from_url(env["REDIS_URL"], decode_responses=True) as client:
        dead_id = _leaky_state(Cluster(client))
    requests = _requests(load_config(env, env_file=None, with_jobs=False), dead_id)
    sidecar = SidecarProcess(process_env(env), tmp_path / "sidecar.log")
    try:
        sidecar.wait_ready()
        outputs = _sweep(sidecar.url, requests)
        redis_server.kill()
        outputs += _sweep(sidecar.url, requests)
    finally:
        sidecar.stop()
    log = sidecar.log_path.read_text()
    everything = "\n".join(outputs) + log
    assert len(outputs) == 2 * len(_credentials()) * len(requests) and len(requests) > 15
    assert "admin action" in log and "***" in everything, "the sweep must have seen the secrets being masked"
    assert ' 200 ' in everything and ' 401 ' in everything and ' 403 ' in everything and ' 503 ' in everything
    leaked = {name for name, value in CANARIES.items() if value in everything}
    assert not leaked, leaked
    assert "Traceback" not in everything
