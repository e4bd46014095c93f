"""The JSON the admin API answers (and the CLI's ``--json`` prints, from the same records): every key, in order, of
jobs, workers, leases, dead letters, the audit trail, breakers and Redis' run history, so a change of the state's
records cannot change what clients read."""

from __future__ import annotations

from appliance.kernel.runtime.breaker import CircuitBreaker

PUBLISHED = ["name", "schedule", "describe", "timezone", "period_seconds", "lock_ttl", "grace", "max_retries",
             "enabled", "description", "next_runs", "published_by", "published_at", "policy", "spec",
             "spec_version", "params"]
JOB = [*PUBLISHED, "paused", "paused_by", "running", "last_run", "last_success", "lock_holder", "pause"]
RUNNING = ["worker", "run_id", "slot", "started", "attempt", "trigger", "catch_up"]
RUN = ["job", "slot", "run_id", "attempt", "owner", "trigger", "worker", "started", "finished", "duration_ms",
       "outcome", "processed", "error", "fence", "summary"]
WORKER = ["host", "pid", "started", "beat_at", "ttl", "version", "jobs", "running", "rss_bytes", "cpu_seconds",
          "clock", "id", "heartbeat_age"]
LEASE = ["job", "key", "holder", "host", "pid", "run_id", "age_seconds", "ttl_seconds", "holder_alive"]
DEAD_LETTER = ["job", "slot", "attempts", "error", "traceback", "run_id", "worker", "trigger", "id", "died_at"]
AUDIT = ["at", "who", "action", "target", "detail"]
BREAKER = ["name", "state", "failures", "opened_at", "changed_at", "retry_in_seconds", "threshold", "reset_seconds",
           "opened_total"]


def test_every_listing_keeps_its_keys_in_order(client, cluster, auth, redis_server):
    cluster.publish("tick")
    cluster.publish("report")
    cluster.run("report", processed=2)
    run = cluster.start_run("tick")
    cluster.beat(jobs=["report", "tick"], running=["tick"], clock_offset=0.01)
    cluster.state.pauses.pause("report", by="ops")
    cluster.state.dead_letters.add("report", slot="2026-01-01T00:00:00Z", attempts=4, error="E", traceback="T",
                                   run_id="r1", worker="h:1", trigger="schedule")
    CircuitBreaker("whatsapp", threshold=1, reset_after=300, client=redis_server.client()).record_failure()

    body = client.get("/api/jobs", headers=auth).get_json()
    jobs = {job["name"]: job for job in body["jobs"]}
    assert [list(job) for job in body["jobs"]] == [JOB, JOB]
    assert list(jobs["tick"]["running"]) == RUNNING and jobs["tick"]["lock_holder"] == run["token"]
    assert list(jobs["report"]["last_run"]) == RUN and jobs["report"]["running"] is None
    (worker,) = body["workers"]
    assert list(worker) == WORKER and list(worker["clock"]) == ["offset_seconds", "error_seconds"]
    assert [list(lease) for lease in client.get("/api/locks", headers=auth).get_json()["locks"]] == [LEASE]
    (letter,) = client.get("/api/dead-letters", headers=auth).get_json()["dead_letters"]
    assert list(letter) == DEAD_LETTER
    (breaker,) = client.get("/api/breakers", headers=auth).get_json()["breakers"]
    assert list(breaker) == BREAKER and breaker["state"] == "open"
    client.post("/api/jobs/tick/trigger", headers=auth)
    (entry,) = client.get("/api/audit", headers=auth).get_json()["audit"]
    assert list(entry) == AUDIT and entry["action"] == "job.trigger"
    (last,) = cluster.state.history.runs("report")
    assert list(last.to_json()) == RUN
    dropped = client.delete(f"/api/dead-letters/{letter['id']}", headers=auth).get_json()["dropped"]
    assert dropped == letter
    cleared = client.delete("/api/locks/tick?force=true", headers=auth).get_json()["cleared"]
    assert list(cleared) == LEASE and cleared["holder"] == run["token"]
