"""The admin API under ``/api``: authentication, every route against a real Redis, JSON errors and the audit
trail (in-process app; the state is produced with the same ``ClusterState`` calls and lease scripts workers use).
"""

from __future__ import annotations

import json
import time

import jwt
import pytest

from appliance.kernel.protocol import keys
from tests.sidecar.cluster import ADMIN_TOKEN, JWT_SECRET


def _jwt(secret: str = JWT_SECRET, **claims) -> str:
    payload = {"sub": "alice", "role": "admin", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


ROUTES = [("GET", "/api/jobs"), ("POST", "/api/jobs/tick/trigger"), ("POST", "/api/jobs/tick/pause"),
          ("POST", "/api/jobs/tick/resume"), ("GET", "/api/history"), ("GET", "/api/locks"),
          ("DELETE", "/api/locks/tick"), ("GET", "/api/dead-letters"), ("POST", "/api/dead-letters/x/retry"),
          ("DELETE", "/api/dead-letters/x"), ("GET", "/api/audit"), ("GET", "/admin")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_any_credential_configured_the_admin_surface_is_404(make_client, method, path):
    client = make_client(ADMIN_TOKEN="")
    response = client.open(path, method=method, headers=bearer(""))
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


@pytest.mark.parametrize(("method", "path"), ROUTES[:-1])
def test_every_route_needs_a_credential(client, cluster, method, path):
    cluster.publish("tick")
    response = client.open(path, method=method)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"] == "unauthorized"
    assert cluster.state.pauses.paused() == set() and cluster.state.triggers.pending("tick") == 0


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic " + ADMIN_TOKEN, "Bearer wrong-token",
                                    f"Bearer {ADMIN_TOKEN}x", f"Bearer {ADMIN_TOKEN[:-1]}"])
def test_bad_bearer_tokens_are_refused(client, header):
    response = client.get("/api/jobs", headers={"Authorization": header})
    assert response.status_code == 401, header


def test_an_empty_admin_token_never_matches(make_client):
    client = make_client(ADMIN_TOKEN="", JWT_SECRET=JWT_SECRET)
    assert client.get("/api/jobs", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/api/jobs", headers={"Authorization": "Bearer  \t"}).status_code == 401
    assert client.get("/api/jobs", headers=bearer(_jwt())).status_code == 200


def test_jwt_with_the_admin_role_is_accepted_and_audited_by_subject(make_client, cluster):
    client = make_client(ADMIN_TOKEN="", JWT_SECRET=JWT_SECRET)
    cluster.publish("tick")
    assert client.post("/api/jobs/tick/pause", headers=bearer(_jwt(sub="alice"))).status_code == 200
    assert client.post("/api/jobs/tick/resume", headers=bearer(_jwt(role=None, roles=["ops", "admin"],
                                                                    sub="bob"))).status_code == 200
    entries = cluster.state.audit.newest()
    assert [(e.who, e.action) for e in entries] == [("jwt:bob", "job.resume"), ("jwt:alice", "job.pause")]


@pytest.mark.parametrize(("token", "status"), [
    (lambda: _jwt(role="viewer"), 403),
    (lambda: _jwt(role=None), 403),
    (lambda: _jwt(exp=int(time.time()) - 60), 401),
    (lambda: _jwt(secret="another-secret-of-at-least-32-characters"), 401),
    (lambda: jwt.encode({"sub": "x", "role": "admin"}, JWT_SECRET, algorithm="HS256"), 401),  # no exp
    (lambda: jwt.encode({"role": "admin", "exp": int(time.time()) + 60}, "", algorithm="none"), 401),
    (lambda: "not.a.jwt", 401),
])
def test_bad_jwts_are_refused(make_client, token, status):
    client = make_client(ADMIN_TOKEN="", JWT_SECRET=JWT_SECRET)
    response = client.get("/api/jobs", headers=bearer(token()))
    assert response.status_code == status, response.get_json()
    assert set(response.get_json()) == {"error", "message", "status"}


def test_jobs_lists_schedule_next_runs_last_run_pause_running_and_lock_holder(client, cluster, auth):
    cluster.publish("tick", schedule="30s")
    cluster.publish("report", schedule="02:00", period=86400)
    cluster.run("report", processed=4)
    run = cluster.start_run("tick")
    worker = cluster.beat(jobs=["tick", "report"], running=["tick"])
    cluster.state.pauses.pause("report", by="ops")
    body = client.get("/api/jobs", headers=auth).get_json()
    jobs = {job["name"]: job for job in body["jobs"]}
    assert jobs["tick"]["schedule"] == "30s" and len(jobs["tick"]["next_runs"]) == 5
    assert jobs["tick"]["running"]["run_id"] == run["run_id"]
    assert jobs["tick"]["lock_holder"] == run["token"]
    assert jobs["report"]["paused"] is True and jobs["report"]["paused_by"] == "ops"
    assert jobs["report"]["last_run"]["outcome"] == "success" and jobs["report"]["last_run"]["processed"] == 4
    assert jobs["report"]["lock_holder"] is None
    assert [w["id"] for w in body["workers"]] == [worker]


def test_trigger_pause_resume_change_the_cluster_state_and_are_audited(client, cluster, auth, clock):
    cluster.publish("tick")
    response = client.post("/api/jobs/tick/trigger", headers=auth)
    assert response.status_code == 202
    trigger = cluster.state.triggers.take("tick")
    assert trigger is not None and trigger.id == response.get_json()["trigger_id"] and trigger.by == "admin-token"
    clock.advance(1)  # the audit trail is ordered by time
    paused = client.post("/api/jobs/tick/pause", headers=auth).get_json()
    assert (paused["job"], paused["paused"], paused["pause"]["by"]) == ("tick", True, "admin-token")
    assert cluster.state.pauses.paused() == {"tick"}
    clock.advance(1)
    resumed = client.post("/api/jobs/tick/resume", headers=auth).get_json()
    assert (resumed["job"], resumed["paused"], resumed["ended"]["by"]) == ("tick", False, "admin-token")
    assert cluster.state.pauses.paused() == set()
    audit = client.get("/api/audit", headers=auth).get_json()["audit"]
    assert [(e["action"], e["target"], e["who"]) for e in audit] == [
        ("job.resume", "tick", "admin-token"), ("job.pause", "tick", "admin-token"),
        ("job.trigger", "tick", "admin-token")]
    assert all(e["at"].endswith("Z") for e in audit)


def test_admin_actions_are_logged_with_who_what_when(client, cluster, auth, caplog):
    cluster.publish("tick")
    with caplog.at_level("INFO", logger="appliance.sidecar.admin"):
        client.post("/api/jobs/tick/pause", headers=auth)
    (record,) = [r for r in caplog.records if r.getMessage() == "admin action"]
    assert record.fields["who"] == "admin-token" and record.fields["action"] == "job.pause"
    assert record.fields["target"] == "tick" and record.fields["at"].endswith("Z")


def test_history_of_one_job_or_all_newest_first(client, cluster, auth, clock):
    cluster.publish("a")
    cluster.publish("b")
    first = cluster.run("a")
    clock.advance(1)
    second = cluster.run("b", outcome="failure", error="boom")
    runs = client.get("/api/history", headers=auth).get_json()["runs"]
    assert [r["run_id"] for r in runs] == [second["run_id"], first["run_id"]]
    only_a = client.get("/api/history?job=a", headers=auth).get_json()
    assert only_a["job"] == "a" and [r["run_id"] for r in only_a["runs"]] == [first["run_id"]]
    assert len(client.get("/api/history?limit=1", headers=auth).get_json()["runs"]) == 1


def test_clearing_a_lock_is_refused_while_its_holder_lives_unless_forced(client, cluster, auth):
    cluster.publish("tick")
    run = cluster.start_run("tick")
    cluster.beat(jobs=["tick"])
    locks = client.get("/api/locks", headers=auth).get_json()["locks"]
    assert [(lock["job"], lock["holder_alive"]) for lock in locks] == [("tick", True)]
    response = client.delete("/api/locks/tick", headers=auth)
    assert response.status_code == 409 and response.get_json()["error"] == "conflict"
    assert cluster.r.get(keys.lock("tick")) == run["token"]
    response = client.delete("/api/locks/tick?force=true", headers=auth)
    assert response.status_code == 200 and response.get_json()["cleared"]["holder"] == run["token"]
    assert cluster.r.get(keys.lock("tick")) is None
    assert cluster.state.audit.newest()[0].action == "lock.clear.force"
    assert client.delete("/api/locks/tick", headers=auth).status_code == 404


def test_a_lock_whose_holder_is_dead_is_cleared_without_force(client, cluster, auth):
    cluster.publish("tick")
    cluster.start_run("tick")
    assert client.delete("/api/locks/tick", headers=auth).status_code == 200
    assert cluster.r.get(keys.lock("tick")) is None


def _dead_letter(cluster, job: str = "tick") -> str:
    return cluster.state.dead_letters.add(job, slot="2026-01-01T00:00:00Z", attempts=3, error="RuntimeError: gave up")


def test_dead_letters_list_retry_and_drop(client, cluster, auth, clock):
    cluster.publish("tick")
    first, second = _dead_letter(cluster), _dead_letter(cluster)
    listed = client.get("/api/dead-letters", headers=auth).get_json()["dead_letters"]
    assert {d["id"] for d in listed} == {first, second}
    response = client.post(f"/api/dead-letters/{first}/retry", headers=auth)
    assert response.status_code == 202
    trigger = cluster.state.triggers.take("tick")
    assert trigger is not None and trigger.id == response.get_json()["trigger_id"]
    assert trigger.payload == {"dead_letter": first, "slot": "2026-01-01T00:00:00Z"}
    clock.advance(1)  # the audit trail is ordered by time
    response = client.delete(f"/api/dead-letters/{second}", headers=auth)
    assert response.status_code == 200 and response.get_json()["dropped"]["id"] == second
    assert client.get("/api/dead-letters", headers=auth).get_json()["dead_letters"] == []
    assert [e.action for e in cluster.state.audit.newest()] == ["dlq.drop", "dlq.retry"]


@pytest.mark.parametrize(("method", "path", "status", "error"), [
    ("POST", "/api/jobs/nope/trigger", 404, "not_found"),
    ("POST", "/api/jobs/nope/pause", 404, "not_found"),
    ("POST", "/api/jobs/nope/resume", 404, "not_found"),
    ("GET", "/api/history?job=nope", 404, "not_found"),
    ("DELETE", "/api/locks/nope", 404, "not_found"),
    ("POST", "/api/dead-letters/nope/retry", 404, "not_found"),
    ("DELETE", "/api/dead-letters/nope", 404, "not_found"),
    ("GET", "/api/no-such-route", 404, "not_found"),
    ("GET", "/api/history?limit=abc", 400, "bad_request"),
    ("GET", "/api/history?limit=0", 400, "bad_request"),
    ("GET", "/api/dead-letters?limit=100000", 400, "bad_request"),
    ("DELETE", "/api/locks/tick?force=maybe", 400, "bad_request"),
    ("GET", "/api/jobs/tick/trigger", 405, "method_not_allowed"),
    ("DELETE", "/api/jobs", 405, "method_not_allowed"),
    ("PUT", "/api/dead-letters", 405, "method_not_allowed"),
])
def test_errors_are_json_with_a_clear_message(client, cluster, auth, method, path, status, error):
    cluster.publish("tick")
    response = client.open(path, method=method, headers=auth)
    body = response.get_json()
    assert response.status_code == status, body
    assert response.mimetype == "application/json"
    assert body["error"] == error and body["status"] == status and body["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_job_message_names_the_known_jobs(client, cluster, auth):
    cluster.publish("tick")
    message = client.post("/api/jobs/tic/trigger", headers=auth).get_json()["message"]
    assert "'tic'" in message and "tick" in message


def test_redis_down_is_a_503_json_error_without_details(client, cluster, auth, redis_server):
    cluster.publish("tick")
    redis_server.kill()
    response = client.get("/api/jobs", headers=auth)
    assert response.status_code == 503
    assert response.get_json()["error"] == "service_unavailable"
    assert "Traceback" not in response.get_data(as_text=True)


def test_an_unexpected_error_is_a_500_without_a_stack_trace(make_app, cluster, auth, caplog):
    app = make_app()
    cluster.publish("tick")
    cluster.r.hset(keys.JOBS, "broken", "{not json")
    with caplog.at_level("ERROR"):
        response = app.test_client().get("/api/jobs", headers=auth)
    body = response.get_json()
    assert response.status_code == 500 and body["error"] == "internal_error"
    assert "Traceback" not in response.get_data(as_text=True)
    assert "JSONDecodeError" in caplog.text and "Traceback" not in caplog.text


def test_no_store_on_admin_responses(client, cluster, auth):
    cluster.publish("tick")
    assert client.get("/api/jobs", headers=auth).headers["Cache-Control"] == "no-store"
    assert json.loads(client.get("/api/locks", headers=auth).get_data()) == {"locks": []}


def test_dashboard_page_is_served_with_a_strict_content_security_policy(client):
    response = client.get("/admin")
    assert response.status_code == 200 and response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = response.get_data(as_text=True)
    assert ADMIN_TOKEN not in page and "<script>" not in page
    script = client.get("/admin/static/dashboard.js")
    script.close()
    assert script.status_code == 200 and script.mimetype == "text/javascript"
