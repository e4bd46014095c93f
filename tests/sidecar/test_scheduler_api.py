"""Pause-all, the circuit breakers and seed 002's ``/api/v1/scheduler`` aliases in the sidecar, against a real
redis-server: what the admin API changes, what ``/health`` and ``/metrics/prometheus`` show, and the seed's
``{"success": true, "data": ...}`` envelope."""

from __future__ import annotations

from appliance.kernel.runtime.breaker import CircuitBreaker


def test_pause_all_is_audited_and_shown_in_health_without_making_jobs_stale(client, cluster, auth, clock):
    cluster.publish("tick", "30s", 30.0)
    clock.advance(121)  # a slot k = 3 periods back lies after its worker's start, with no success: stale
    cluster.beat(["tick"], started=clock.time() - 121)
    assert client.get("/health").get_json()["freshness"]["tick"]["status"] == "stale"

    answer = client.post("/api/pause-all", headers=auth)
    assert answer.status_code == 200 and answer.get_json()["paused_all"] is True
    health = client.get("/health").get_json()
    assert health["scheduler"]["state"] == "paused" and health["scheduler"]["paused_by"] == "admin-token"
    assert health["freshness"]["tick"]["status"] == "paused" and health["status"] == "ok"
    assert client.get("/api/scheduler", headers=auth).get_json()["paused_all"] is True
    assert cluster.state.pauses.paused() == set(), "the jobs' own pause flags are untouched"

    assert client.post("/api/resume-all", headers=auth).get_json()["paused_all"] is False
    assert client.get("/health").get_json()["scheduler"] == {"state": "running", "paused_by": None,
                                                             "paused_at": None}
    assert [(e.action, e.who) for e in reversed(cluster.state.audit.newest())] == [
        ("scheduler.pause-all", "admin-token"), ("scheduler.resume-all", "admin-token")]


def test_pause_all_keeps_the_admin_body_rules_and_needs_a_credential(client, cluster, auth):
    assert client.post("/api/pause-all").status_code == 401
    assert client.post("/api/pause-all", headers=auth, data="[1]").status_code == 400
    assert client.post("/api/v1/scheduler/stop", headers=auth, data="not json").status_code == 400
    assert cluster.state.pauses.paused_all() is None


def test_an_open_breaker_degrades_health_and_shows_in_metrics_until_it_closes(make_client, cluster, auth,
                                                                              redis_server):
    client = make_client()
    cluster.publish("tick", "30s", 30.0)
    cluster.beat(["tick"])
    cluster.run("tick")
    breaker = CircuitBreaker("whatsapp", threshold=2, reset_after=60, client=redis_server.client())
    breaker.record_failure()
    assert client.get("/health").get_json()["status"] == "ok"
    breaker.record_failure()
    health = client.get("/health").get_json()
    assert health["status"] == "degraded"
    assert health["breakers"]["whatsapp"]["state"] == "open" and health["breakers"]["whatsapp"]["failures"] == 2
    text = client.get("/metrics/prometheus").get_data(as_text=True)
    assert 'appliance_breaker_state{breaker="whatsapp"} 2.0' in text
    assert client.get("/api/breakers", headers=auth).get_json()["breakers"][0]["name"] == "whatsapp"
    breaker.record_success()
    assert client.get("/health").get_json()["status"] == "ok"
    assert 'appliance_breaker_state{breaker="whatsapp"} 0.0' in client.get("/metrics/prometheus").get_data(
        as_text=True)


def test_seed_002_paths_answer_in_the_seed_envelope(client, cluster, auth):
    cluster.publish("tick", "30s", 30.0)
    cluster.beat(["tick"])
    cluster.run("tick", processed=3)

    status = client.get("/api/v1/scheduler/status", headers=auth)
    body = status.get_json()
    assert status.status_code == 200 and body["success"] is True
    assert body["data"]["status"] == "running" and body["data"]["isRunning"] is True
    assert body["data"]["activeJobs"] == ["tick"] and body["data"]["lastSyncs"]["tick"]["lastEnd"]

    stop = client.post("/api/v1/scheduler/stop", headers=auth).get_json()
    assert stop == {"success": True, "data": {**stop["data"], "paused_all": True}}
    assert client.get("/api/v1/scheduler/status", headers=auth).get_json()["data"]["status"] == "stopped"
    assert client.get("/api/v1/scheduler/next-sync-times", headers=auth).get_json()["data"]["tick"]["next"] is None
    assert client.post("/api/v1/scheduler/start", headers=auth).get_json()["data"]["paused_all"] is False
    assert client.get("/api/v1/scheduler/next-sync-times", headers=auth).get_json()["data"]["tick"]["next"]

    trigger = client.post("/api/v1/scheduler/trigger/tick", headers=auth)
    assert trigger.status_code == 202 and trigger.get_json()["data"]["job"] == "tick"
    assert cluster.state.triggers.pending("tick") == 1
    assert client.post("/api/v1/scheduler/trigger/nope", headers=auth).status_code == 404

    history = client.get("/api/v1/scheduler/history", headers=auth).get_json()
    assert history["success"] is True and history["data"]["runs"][0]["processed"] == 3
    assert client.get("/api/v1/scheduler/status").status_code == 401
    assert client.get("/api/v1/scheduler/status", headers=auth).headers["Cache-Control"] == "no-store"
