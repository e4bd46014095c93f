"""campaign-scheduler against a real PostgreSQL: batches, bad rows, pause, rate limit, run budget, lost fence.

Runs are driven in-process with a RunContext built as the worker builds it (fencing numbers issued by
PostgreSQL), through the default ``outbox`` channel or the local provider server (tests/packs/crm/providers.py).
"""

from __future__ import annotations

import pytest

from appliance.errors import LockLost
from appliance.kernel.protocol.fencing import issue_fence
from appliance.packs.crm.channels import build_channels
from appliance.packs.crm.jobs import campaigns
from appliance.packs.crm.jobs.claims import run_session
from tests.packs.crm.data import campaign, emails, phones, recipient_states, tenant

FAST = {"CAMPAIGN_BATCH_DELAY": "0", "CAMPAIGN_RATE_LIMIT": "0"}


def test_a_due_campaign_goes_out_in_batches_through_the_outbox_and_completes(make_ctx, sql):
    t = tenant(sql)
    c = campaign(sql, t, emails(250))
    ctx = make_ctx("campaign-scheduler", CAMPAIGN_BATCH_SIZE="100", **FAST)
    assert campaigns.run(ctx) == {"reconciled": 0, "started": 1, "sent": 250}
    assert recipient_states(sql, c) == {"sent": 250}
    assert sql("SELECT status FROM campaigns WHERE id = %s", (c,)) == [("completed",)]
    keys = sql("SELECT idempotency_key, status, recipient, subject, body FROM outbox ORDER BY id")
    assert len(keys) == 250 and {k[1] for k in keys} == {"recorded"}
    assert keys[0][2:] == ("lead0@example.com", "Offer for Lead 1", "Hello Lead 1")
    assert ctx.processed_count == 250 and ctx.backlog["campaign_recipients_pending"] == 0
    claimed_at = sql("SELECT count(DISTINCT claimed_at) FROM campaign_recipients WHERE campaign_id = %s", (c,))
    assert claimed_at == [(3,)], "three batches of at most 100"
    kinds = [k for (k,) in sql("SELECT kind FROM activity ORDER BY id")]
    assert kinds == ["campaign-started", "campaign-completed"]


def test_campaigns_not_yet_due_or_in_draft_are_left_alone(make_ctx, sql):
    t = tenant(sql)
    draft = campaign(sql, t, emails(3), status="draft")
    later = campaign(sql, t, emails(3), scheduled_at=sql("SELECT now() + interval '1 hour'")[0][0])
    campaigns.run(make_ctx("campaign-scheduler", **FAST))
    assert recipient_states(sql, draft) == {"pending": 3} and recipient_states(sql, later) == {"pending": 3}
    assert sql("SELECT count(*) FROM outbox") == [(0,)]


def test_bad_recipients_fail_with_their_reason_while_the_rest_go_out(make_ctx, sql):
    t = tenant(sql)
    c = campaign(sql, t, ["good@example.com", "not-an-address", "also good@x", "second@example.org"])
    w = campaign(sql, t, ["+12025550100", "12345", "+1202555"], channel="whatsapp")
    campaigns.run(make_ctx("campaign-scheduler", **FAST))
    rows = dict(sql("SELECT contact, status || ':' || coalesce(error, '') FROM campaign_recipients"))
    assert rows["good@example.com"] == "sent:" and rows["second@example.org"] == "sent:"
    assert rows["not-an-address"].startswith("failed:invalid email address")
    assert rows["also good@x"].startswith("failed:invalid email address")
    assert rows["+12025550100"] == "sent:"
    assert rows["12345"].startswith("failed:invalid phone number")
    assert rows["+1202555"].startswith("failed:invalid phone")
    assert sql("SELECT status FROM campaigns WHERE id IN (%s, %s)", (c, w)) == [("completed",), ("completed",)]
    assert sql("SELECT count(*) FROM outbox") == [(3,)]


@pytest.mark.parametrize("status", ["paused", "cancelled"])
def test_a_paused_or_cancelled_campaign_stops_between_batches(make_ctx, sql, status):
    t = tenant(sql)
    c = campaign(sql, t, emails(50))
    ctx = make_ctx("campaign-scheduler", CAMPAIGN_BATCH_SIZE="10", **FAST)
    channels = build_channels(ctx.config.crm, ctx.sleep)
    sleeps = []

    def stop_after_first_batch(seconds: float) -> None:
        sleeps.append(seconds)
        sql("UPDATE campaigns SET status = %s WHERE id = %s", (status, c))

    ctx.sleep = stop_after_first_batch
    with run_session(ctx) as conn:
        campaigns.process(conn, ctx, channels)
    assert recipient_states(sql, c) == {"sent": 10, "pending": 40} and len(sleeps) == 1
    if status == "paused":
        sql("UPDATE campaigns SET status = 'sending' WHERE id = %s", (c,))
        campaigns.run(make_ctx("campaign-scheduler", CAMPAIGN_BATCH_SIZE="10", **FAST))
        assert recipient_states(sql, c) == {"sent": 50}
        assert sql("SELECT count(*), count(DISTINCT idempotency_key) FROM outbox") == [(50, 50)]


def test_the_tenant_rate_limit_holds_back_the_rest_for_a_later_run(make_ctx, sql):
    limited = tenant(sql, "Small", send_rate_per_minute=30)
    free = tenant(sql, "Big")
    slow = campaign(sql, limited, emails(100))
    fast = campaign(sql, free, emails(100, start=100))
    campaigns.run(make_ctx("campaign-scheduler", CAMPAIGN_BATCH_SIZE="20", CAMPAIGN_BATCH_DELAY="0",
                           CAMPAIGN_RATE_LIMIT="1000"))
    assert recipient_states(sql, slow) == {"sent": 30, "pending": 70}
    assert recipient_states(sql, fast) == {"sent": 100}
    campaigns.run(make_ctx("campaign-scheduler", CAMPAIGN_BATCH_SIZE="20", CAMPAIGN_BATCH_DELAY="0"))
    assert recipient_states(sql, slow) == {"sent": 30, "pending": 70}, "the minute is not over yet"
    assert sql("SELECT status FROM campaigns WHERE id = %s", (slow,)) == [("sending",)]


def test_a_long_campaign_continues_across_runs_within_the_run_budget(make_ctx, sql):
    t = tenant(sql)
    c = campaign(sql, t, emails(60))
    env = dict(CAMPAIGN_BATCH_SIZE="10", CAMPAIGN_BATCH_DELAY="150", CAMPAIGN_RUN_BUDGET="0.2",
               CAMPAIGN_RATE_LIMIT="0")
    runs = 0
    while recipient_states(sql, c).get("pending"):
        campaigns.run(make_ctx("campaign-scheduler", **env))
        runs += 1
        assert runs < 10
    assert 2 <= runs <= 5, f"each run stops after its budget (took {runs} runs)"
    assert recipient_states(sql, c) == {"sent": 60}
    assert sql("SELECT count(*), count(DISTINCT idempotency_key) FROM outbox") == [(60, 60)]


def test_a_run_whose_fence_is_lost_commits_nothing_and_the_next_run_reconciles(make_ctx, sql, migrated_db):
    """The batch is handed over (outbox rows are facts), but its results are not committed by the stale run;
    the next run takes them from the outbox and sends nothing twice."""
    t = tenant(sql)
    c = campaign(sql, t, emails(30))
    ctx = make_ctx("campaign-scheduler", CAMPAIGN_BATCH_SIZE="10", **FAST)
    channels = build_channels(ctx.config.crm, ctx.sleep)
    original = campaigns.send

    def send_then_lose_lease(conn, run, queue, transport, messages, refused, now):
        with ctx.db.connection() as other:  # a newer run takes the job meanwhile
            issue_fence(other, "campaign-scheduler")
        return original(conn, run, queue, transport, messages, refused, now)

    campaigns.send = send_then_lose_lease
    try:
        with pytest.raises(LockLost), run_session(ctx) as conn:
            campaigns.process(conn, ctx, channels)
    finally:
        campaigns.send = original
    assert recipient_states(sql, c) == {"sending": 10, "pending": 20}
    assert sql("SELECT count(*) FROM outbox") == [(10,)]
    campaigns.run(make_ctx("campaign-scheduler", CAMPAIGN_BATCH_SIZE="10", **FAST))
    assert recipient_states(sql, c) == {"sent": 30}
    assert sql("SELECT count(*), count(DISTINCT idempotency_key) FROM outbox") == [(30, 30)]
    (detail,) = sql("SELECT detail FROM activity WHERE kind = 'reconciled'")[0]
    assert detail["outcomes"] == {"sent": 10}


def test_whatsapp_campaign_through_the_provider_sends_each_recipient_once(make_ctx, sql, provider):
    t = tenant(sql)
    c = campaign(sql, t, phones(25), channel="whatsapp")
    campaigns.run(make_ctx("campaign-scheduler", WHATSAPP_CHANNEL="http", WHATSAPP_API_URL=provider.url,
                           WHATSAPP_API_TOKEN="test-token", CAMPAIGN_BATCH_SIZE="10", **FAST))
    assert recipient_states(sql, c) == {"sent": 25}
    assert len(provider.delivered) == 25 and set(provider.delivered.values()) == {1}
    ids = sql("SELECT provider_message_id FROM campaign_recipients ORDER BY id")
    assert all(i.startswith("msg-") for (i,) in ids)


def test_transient_failures_are_retried_until_max_attempts_then_fail_with_the_reason(make_ctx, sql, provider):
    provider.plan = [(503, {})] * 6
    t = tenant(sql)
    c = campaign(sql, t, phones(3), channel="whatsapp")
    campaigns.run(make_ctx("campaign-scheduler", WHATSAPP_CHANNEL="http", WHATSAPP_API_URL=provider.url,
                           WHATSAPP_API_TOKEN="test-token", PROVIDER_MAX_RETRIES="0", CAMPAIGN_MAX_ATTEMPTS="2",
                           CAMPAIGN_RETRY_BACKOFF="0", PROVIDER_BREAKER_THRESHOLD="100", **FAST))
    rows = sql("SELECT status, attempts, error FROM campaign_recipients")
    assert rows == [("failed", 2, "gave up after 2 attempts: whatsapp: HTTP 503: planned 503")] * 3
    assert provider.delivered == {} and sql("SELECT status FROM campaigns WHERE id = %s", (c,)) == [("completed",)]


def test_a_long_retry_after_puts_the_recipient_back_until_then(make_ctx, sql, provider):
    provider.plan = [(429, {"Retry-After": "120"})]
    t = tenant(sql)
    c = campaign(sql, t, phones(1), channel="whatsapp")
    campaigns.run(make_ctx("campaign-scheduler", WHATSAPP_CHANNEL="http", WHATSAPP_API_URL=provider.url,
                           WHATSAPP_API_TOKEN="test-token", PROVIDER_RETRY_MAX_WAIT="1", **FAST))
    ((status, attempts, wait),) = sql("SELECT status, attempts, extract(epoch FROM next_attempt_at - claimed_at) "
                                      "FROM campaign_recipients")
    assert (status, attempts) == ("pending", 1) and 119 <= float(wait) <= 121
    assert len(provider.requests) == 1, "a wait longer than PROVIDER_RETRY_MAX_WAIT is left to a later run"
    assert sql("SELECT status FROM campaigns WHERE id = %s", (c,)) == [("sending",)]
