"""The unauthenticated ``/health`` shows no filesystem path: not the Redis or PostgreSQL socket in a failure
message, not the folder of Qdrant's embedded storage."""

from __future__ import annotations

import pytest

from appliance.sidecar.checks import without_paths


@pytest.mark.parametrize(("text", "shown"), [
    ("Error 2 connecting to unix socket: /srv/app/data/run/redis.sock. No such file or directory.",
     "Error 2 connecting to unix socket: <path>. No such file or directory."),
    ('connection to server on socket "/srv/app/run/.s.PGSQL.5432" failed',
     'connection to server on socket "<path>" failed'),
    ("/readyz answered HTTP 503", "/readyz answered HTTP 503"),
    ("ConnectError: http://127.0.0.1:6333/readyz refused", "ConnectError: http://127.0.0.1:6333/readyz refused"),
    ("connected (latency: 0.4ms)", "connected (latency: 0.4ms)"),
])
def test_paths_are_replaced_urls_and_endpoints_are_kept(text, shown):
    assert without_paths(text) == shown


def test_health_with_services_down_on_unix_sockets_names_no_path(make_client, tmp_path):
    home = tmp_path / "appliance-home"
    client = make_client(APPLIANCE_HOME=str(home), REDIS_URL=f"unix://{home}/run/redis.sock",
                         DATABASE_URL=f"postgresql:///appliance?host={home}/run&user=appliance",
                         HEALTH_CHECK_TIMEOUT="1")
    response = client.get("/health")
    text = response.get_data(as_text=True)
    components = response.get_json()["components"]
    assert response.status_code == 503
    assert components["redis"]["status"] == components["database"]["status"] == "down"
    assert "<path>" in components["redis"]["message"] and "<path>" in components["database"]["message"]
    qdrant = components["qdrant"]["message"]
    assert qdrant.startswith("embedded Qdrant Edge") and "/" not in qdrant
    assert str(tmp_path) not in text and "/run/" not in text
