"""The admin API of issue 22's operator actions, against real Redis and PostgreSQL: triggers with parameters,
pauses with a reason, an end and an on-resume policy, backfills planned first (and refused when asked wrongly),
and the audit log. Bad input is a 400 naming the problem, with nothing changed."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from appliance.kernel.protocol.owner import iso

PARAMS = ({"name": "region", "type": "str", "default": "north", "choices": ["north", "south"], "description": ""},
          {"name": "limit", "type": "int", "default": 10, "choices": None, "description": ""})


@pytest.fixture
def clean_db(sidecar_db):
    with psycopg.connect(sidecar_db, autocommit=True) as conn:
        conn.execute("TRUNCATE audit_log, backfills, backfill_slots")
    return sidecar_db


def test_trigger_params_are_checked_coerced_and_audited(client, cluster, auth, clean_db):
    cluster.publish("report", params=PARAMS)
    answer = client.post("/api/jobs/report/trigger", headers=auth,
                         json={"params": {"region": "south", "limit": "3"}, "reason": "month end"})
    assert answer.status_code == 202, answer.get_json()
    trigger = cluster.state.triggers.take("report")
    assert trigger is not None and trigger.params == {"region": "south", "limit": 3}
    for body, message in (({"params": {"colour": "red"}}, "unknown parameter 'colour' (job report declares: limit, "
                                                          "region)"),
                          ({"params": {"region": "west"}}, "expected one of 'north', 'south', not 'west'"),
                          ({"params": {"limit": True}}, "expected an int, not True"),
                          ({"params": ["region"]}, "params must be a JSON object"),
                          ({"slot": "soon"}, "--slot must be an ISO 8601 time"),
                          ({"param": {}}, "unknown option(s) param")):
        refused = client.post("/api/jobs/report/trigger", headers=auth, json=body)
        assert refused.status_code == 400 and message in refused.get_json()["message"], refused.get_json()
    assert cluster.state.triggers.pending("report") == 0
    assert client.post("/api/jobs/nope/trigger", headers=auth, json={}).status_code == 404
    (row,) = client.get("/api/audit-log", headers=auth).get_json()["audit_log"]
    assert (row["actor"], row["action"], row["target"], row["reason"]) == ("admin-token", "job.trigger", "report",
                                                                          "month end")
    assert row["after"]["params"] == {"region": "south", "limit": 3}


def test_pause_with_reason_end_and_policy_then_resume_is_audited_with_before_and_after(client, cluster, auth,
                                                                                        clean_db, clock):
    cluster.publish("tick")
    paused = client.post("/api/jobs/tick/pause", headers=auth,
                         json={"reason": "vendor outage", "until": "2h", "on_resume": "catch_up:3"}).get_json()
    assert paused["pause"]["reason"] == "vendor outage" and paused["pause"]["on_resume"] == "catch_up:3"
    assert paused["pause"]["until"] == iso(clock.now() + timedelta(hours=2))
    (job,) = client.get("/api/jobs", headers=auth).get_json()["jobs"]
    assert job["pause"] == paused["pause"]
    for body, message in (({"until": "tomorrow"}, "--until must be an ISO 8601 time or a duration"),
                          ({"on_resume": "run_all"}, "--on-resume must be skip, run_latest or catch_up:N"),
                          ({"reason": 3}, "reason must be a string")):
        refused = client.post("/api/jobs/tick/pause", headers=auth, json=body)
        assert refused.status_code == 400 and message in refused.get_json()["message"]
    assert cluster.state.pauses.each()["tick"].reason == "vendor outage"
    every = client.post("/api/pause-all", headers=auth, json={"reason": "freeze"}).get_json()
    assert every["pause"]["reason"] == "freeze"
    assert client.get("/api/scheduler", headers=auth).get_json()["pause"]["reason"] == "freeze"
    clock.advance(1)
    resumed = client.post("/api/jobs/tick/resume", headers=auth).get_json()
    assert resumed["ended"]["reason"] == "vendor outage" and resumed["backfills"] == {}  # no slot was held back
    client.post("/api/resume-all", headers=auth)
    rows = client.get("/api/audit-log?since=1h", headers=auth).get_json()["audit_log"]
    assert [r["action"] for r in rows] == ["scheduler.resume-all", "job.resume", "scheduler.pause-all", "job.pause"]
    assert rows[1]["before"]["reason"] == "vendor outage" and rows[1]["after"]["paused"] is False
    assert rows[3]["before"] is None and rows[3]["after"]["until"] == paused["pause"]["until"]
    assert client.get("/api/audit-log?since=whenever", headers=auth).status_code == 400


def test_backfill_dry_run_plans_and_start_queues_exactly_the_plan(client, cluster, auth, clean_db, clock):
    cluster.publish("tick", schedule="1m", period=60)
    now = clock.now().replace(second=0, microsecond=0)
    since, until = now - timedelta(hours=3), now - timedelta(hours=2)
    cluster.ledger.record([])  # the ledger is empty: every slot of the window is missing
    body = {"from": iso(since), "to": iso(until), "dry_run": True}
    plan = client.post("/api/jobs/tick/backfill", headers=auth, json=body).get_json()["plan"]
    assert plan["counts"] == {"run": 61, "not_run": 0} and plan["will_run"][0]["slot"] == iso(since)
    with psycopg.connect(cluster.ledger.pool.conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM backfills").fetchone() == (0,)
    started = client.post("/api/jobs/tick/backfill", headers=auth, json={**body, "dry_run": False,
                                                                          "reason": "outage"})
    assert started.status_code == 202
    ident = started.get_json()["backfill"]
    progress = client.get(f"/api/backfills/{ident}", headers=auth).get_json()
    assert (progress["total"], progress["states"], progress["complete"]) == (61, {"planned": 61}, False)
    assert client.get("/api/backfills/nope", headers=auth).status_code == 404
    (row,) = client.get("/api/audit-log", headers=auth).get_json()["audit_log"]
    assert (row["action"], row["reason"], row["after"]["backfill"]) == ("job.backfill", "outage", ident)
    for payload, message in (({"from": iso(until), "to": iso(since)}, "must be after --from"),
                             ({"from": iso(now - timedelta(days=30)), "to": iso(now)},
                              "more than 10,000 slots of tick: pass --force"),
                             ({"from": "yesterday", "to": iso(now)}, "--from must be an ISO 8601 time"),
                             ({"from": iso(since)}, "from and to (ISO 8601 times) are required"),
                             ({**body, "only": "some"}, "--only must be one of missing, failed, all"),
                             ({**body, "max_parallel": "2"}, "max_parallel must be an integer"),
                             ({**body, "dry_run": "yes"}, "dry_run must be true or false")):
        refused = client.post("/api/jobs/tick/backfill", headers=auth, json=payload)
        assert refused.status_code == 400 and message in refused.get_json()["message"], refused.get_json()
    assert client.post("/api/jobs/nope/backfill", headers=auth, json=body).status_code == 404
