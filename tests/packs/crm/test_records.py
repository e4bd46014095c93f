"""lead-reminder-scheduler, trial-expiration and call-cleanup against a real PostgreSQL; reminder emails go to
a real aiosmtpd server."""

from __future__ import annotations

import pytest

from appliance.errors import LockLost
from appliance.kernel.protocol.fencing import issue_fence
from appliance.packs.crm.channels import Channels
from appliance.packs.crm.jobs import cleanup, reminders, trials
from appliance.packs.crm.jobs.claims import run_session
from tests.packs.crm.data import tenant
from tests.packs.crm.test_channels import smtp_transport


def lead(sql, tenant_id: int, agent_id: int | None, due: str | None, name: str = "Priya") -> int:
    return sql("INSERT INTO leads (tenant_id, owner_id, name, email, next_follow_up_at) "
               "VALUES (%s, %s, %s, 'priya@example.com', now() + %s::interval) RETURNING id",
               (tenant_id, agent_id, name, due))[0][0]


def agent(sql, tenant_id: int, email: str = "ravi@example.com") -> int:
    return sql("INSERT INTO agents (tenant_id, name, email) VALUES (%s, 'Ravi', %s) RETURNING id",
               (tenant_id, email))[0][0]


def run_reminders(make_ctx, channels: Channels):
    ctx = make_ctx("lead-reminder-scheduler")
    with run_session(ctx) as conn:
        reminders.process(conn, ctx, channels)
    return ctx


def test_each_due_follow_up_gets_exactly_one_reminder_to_its_agent(make_ctx, sql, smtp_server):
    t = tenant(sql)
    ravi = agent(sql, t)
    broken = agent(sql, t, email="not-an-email")
    due = lead(sql, t, ravi, "-10 minutes")
    lead(sql, t, ravi, "+1 day", name="Later")
    lead(sql, t, None, "-1 hour", name="Nobody's")
    bad = lead(sql, t, broken, "-5 minutes", name="Bad agent")
    channels = Channels(smtp_transport(smtp_server), None, None, None)
    ctx = run_reminders(make_ctx, channels)
    run_reminders(make_ctx, channels)
    assert ctx.processed_count == 1
    (message,) = smtp_server.recorder.messages
    assert message["To"] == "ravi@example.com" and message["Subject"] == "Follow up with Priya"
    rows = dict(sql("SELECT lead_id, status || ':' || coalesce(error, '') FROM reminders"))
    assert rows[due] == "sent:" and rows[bad].startswith("failed:agent Ravi: invalid email address")
    assert len(rows) == 2
    sql("UPDATE leads SET next_follow_up_at = now() - interval '1 minute' WHERE id = %s", (due,))
    run_reminders(make_ctx, channels)
    assert len(smtp_server.recorder.messages) == 2, "a new follow-up time is a new reminder"
    assert sql("SELECT count(*) FROM reminders WHERE lead_id = %s", (due,)) == [(2,)]


def test_trials_expire_once_with_one_event_row(make_ctx, sql):
    ended = tenant(sql, "Ended", plan="trial")
    sql("UPDATE tenants SET trial_ends_at = now() - interval '1 hour' WHERE id = %s", (ended,))
    running = tenant(sql, "Running", plan="trial")
    sql("UPDATE tenants SET trial_ends_at = now() + interval '1 day' WHERE id = %s", (running,))
    paying = tenant(sql, "Paying", plan="pro")
    sql("UPDATE tenants SET trial_ends_at = now() - interval '1 day' WHERE id = %s", (paying,))
    assert trials.run(make_ctx("trial-expiration")) == {"suspended": 1}
    assert trials.run(make_ctx("trial-expiration")) == {"suspended": 0}
    assert dict(sql("SELECT name, status FROM tenants")) == {"Ended": "suspended", "Running": "active",
                                                             "Paying": "active"}
    assert sql("SELECT tenant_id, kind FROM activity") == [(ended, "trial-expired")]


def test_a_trial_run_with_a_lost_fence_suspends_nobody(make_ctx, sql, pool):
    t = tenant(sql, "Ended", plan="trial")
    sql("UPDATE tenants SET trial_ends_at = now() - interval '1 hour' WHERE id = %s", (t,))
    stale = make_ctx("trial-expiration")
    assert stale.fence
    with pool.connection() as conn:
        issue_fence(conn, "trial-expiration")
    with pytest.raises(LockLost):
        trials.run(stale)
    assert sql("SELECT status FROM tenants") == [("active",)] and sql("SELECT count(*) FROM activity") == [(0,)]


def test_cleanup_deletes_only_old_rows_in_small_batches(make_ctx, sql):
    t = tenant(sql)
    old, recent = "now() - interval '100 days'", "now() - interval '1 day'"
    for age in (old, recent):
        for status in ("completed", "queued"):
            sql(f"INSERT INTO calls (tenant_id, phone, status, finished_at) VALUES (%s, '+12025550100', %s, {age})",
                (t, status))
        sql(f"INSERT INTO activity (tenant_id, kind, created_at) SELECT %s, 'x', {age} FROM generate_series(1, 7)",
            (t,))
        sql(f"INSERT INTO job_runs (run_id, job, slot, worker, started_at, finished_at, duration_ms, outcome) "
            f"SELECT 'r' || g || md5(({age})::text), 'j', {age}, 'w', {age}, {age}, 1, 'success' "
            f"FROM generate_series(1, 3) AS g")
        sql(f"INSERT INTO job_slots (job, slot, outcome) SELECT 'j', {age} + g * interval '1 s', 'success' "
            f"FROM generate_series(1, 2) AS g")
    call = sql("SELECT min(id) FROM calls")[0][0]
    sql(f"INSERT INTO call_attempts (call_id, tenant_id, attempt, started_at) VALUES (%s, %s, 1, {old}), "
        f"(%s, %s, 2, {recent})", (call, t, call, t))
    ctx = make_ctx("call-cleanup", CLEANUP_BATCH_SIZE="2")
    deleted = cleanup.run(ctx)
    assert deleted == {"call_attempts": 1, "calls": 1, "activity": 7, "outbox": 0}
    assert sql("SELECT count(*) FROM calls") == [(3,)], "queued calls stay whatever their age"
    assert sql("SELECT count(*) FROM activity") == [(7,)]
    # The ledger is the appliance's to keep (appliance.worker.retention), not the pack's: untouched here.
    assert sql("SELECT count(*) FROM job_runs WHERE job = 'j'") == [(6,)]
    assert sql("SELECT count(*) FROM job_slots WHERE job = 'j'") == [(4,)]
    assert sql("SELECT outcome FROM job_slots WHERE job = 'call-cleanup'") == [("success",)], "completed fenced"
    assert cleanup.run(make_ctx("call-cleanup")) == {t: 0 for t in deleted}
    assert ctx.processed_count == 9
