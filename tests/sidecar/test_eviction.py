"""/health shows a Redis whose eviction policy can drop leases: degraded, with the reason."""

from __future__ import annotations


def test_an_evicting_redis_makes_health_degraded_with_the_reason(client, cluster, redis_server):
    cluster.beat(jobs=[])  # the worker beside the sidecar is alive: nothing else is wrong
    assert client.get("/health").get_json()["status"] == "ok"
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    body = client.get("/health").get_json()
    redis = body["components"]["redis"]
    assert body["status"] == "degraded" and redis["status"] == "degraded"
    assert "allkeys-lru" in redis["message"] and "noeviction" in redis["message"]
