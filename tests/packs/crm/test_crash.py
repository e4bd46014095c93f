"""Crashes and replicas on one campaign: no recipient is sent twice, none is lost.

In-process crashes raise out of the hand-off the way a dying process stops (results never recorded); the
process tests kill -9 a real ``appliance jobs run`` and run two workers side by side. The WhatsApp provider is
the local server of tests/packs/crm/providers.py, which counts deliveries per idempotency key; email goes to a real
aiosmtpd server.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from appliance.errors import Cancelled, LockLost
from appliance.kernel.runtime.clock import SYSTEM
from appliance.packs.crm.channels import Channels, build_channels
from appliance.packs.crm.jobs import campaigns
from appliance.packs.crm.jobs.claims import run_session
from appliance.packs.crm.jobs.sending import claim, reconcile
from tests.packs.crm.data import campaign, emails, phones, recipient_states, tenant
from tests.packs.crm.test_channels import smtp_transport
from tests.services import wait_until
from tests.worker.harness import REPO, WorkerProcess, worker_env, write_jobs_file

FAST = {"CAMPAIGN_BATCH_DELAY": "0", "CAMPAIGN_RATE_LIMIT": "0", "CAMPAIGN_BATCH_SIZE": "5"}


class DiesDuringHandOff:
    """Wraps a transport: the second batch is handed over (``after``) or not (``before``), then the run dies."""

    def __init__(self, inner, when: str):
        self.inner, self.when, self.batches = inner, when, 0
        self.name = inner.name

    def send(self, messages):
        self.batches += 1
        if self.batches == 2:
            if self.when == "after":
                self.inner.send(messages)
            raise Cancelled("simulated crash")
        return self.inner.send(messages)


def crash_then_rerun(ctx_factory, channels: Channels, transport_attr: str, when: str, env: dict) -> None:
    setattr(channels, transport_attr, DiesDuringHandOff(getattr(channels, transport_attr), when))
    ctx = ctx_factory("campaign-scheduler", **env)
    with pytest.raises(Cancelled), run_session(ctx) as conn:
        campaigns.process(conn, ctx, channels)


def test_smtp_crash_after_hand_off_marks_the_batch_unknown_and_sends_nothing_twice(make_ctx, sql, smtp_server):
    t = tenant(sql)
    c = campaign(sql, t, emails(15))
    channels = Channels(smtp_transport(smtp_server), None, None, None)
    crash_then_rerun(make_ctx, channels, "email", "after", FAST)
    assert recipient_states(sql, c) == {"sent": 5, "sending": 5, "pending": 5}
    channels.email = smtp_transport(smtp_server)
    ctx = make_ctx("campaign-scheduler", **FAST)
    with run_session(ctx) as conn:
        campaigns.process(conn, ctx, channels)
    assert recipient_states(sql, c) == {"sent": 10, "unknown": 5}
    unknown = sql("SELECT error FROM campaign_recipients WHERE status = 'unknown'")
    assert all("interrupted" in e for (e,) in unknown)
    counts = smtp_server.recorder.by_message_id()
    assert len(counts) == 15 and set(counts.values()) == {1}, "each recipient reached the server once"


@pytest.mark.parametrize("when", ["after", "before"])
def test_whatsapp_crash_is_retried_under_the_same_key_and_delivered_once(make_ctx, sql, provider, when):
    env = {**FAST, "WHATSAPP_CHANNEL": "http", "WHATSAPP_API_URL": provider.url, "WHATSAPP_API_TOKEN": "test-token"}
    t = tenant(sql)
    c = campaign(sql, t, phones(15), channel="whatsapp")
    ctx = make_ctx("campaign-scheduler", **env)
    channels = build_channels(ctx.config.crm, ctx.sleep)
    try:
        crash_then_rerun(make_ctx, channels, "whatsapp", when, env)
    finally:
        channels.close()
    assert recipient_states(sql, c) == {"sent": 5, "sending": 5, "pending": 5}
    campaigns.run(make_ctx("campaign-scheduler", **env))
    assert recipient_states(sql, c) == {"sent": 15}
    assert len(provider.delivered) == 15 and set(provider.delivered.values()) == {1}
    posts = [key for method, _path, key in provider.requests if method == "POST"]
    assert len(posts) == (20 if when == "after" else 15), "the interrupted batch was asked again, same keys"
    attempts = sql("SELECT attempts, count(*) FROM campaign_recipients GROUP BY attempts ORDER BY attempts")
    # the outbox row is written before the hand-off, so both cases read as an interrupted hand-off
    assert attempts == [(1, 10), (2, 5)]


def test_claims_of_a_live_run_are_left_alone_and_reconciled_once_it_is_gone(make_ctx, sql):
    t = tenant(sql)
    c = campaign(sql, t, emails(10))
    sql("UPDATE campaigns SET status = 'sending' WHERE id = %s", (c,))
    first = make_ctx("campaign-scheduler", **FAST)
    queue = campaigns.recipients_queue(first.config.crm)
    with run_session(first) as conn:
        claimed = claim(conn, first, queue, 4, SYSTEM.now())
        assert len(claimed) == 4
        second = make_ctx("campaign-scheduler", **FAST)
        with run_session(second) as other:
            assert reconcile(other, second, queue, SYSTEM.now()) == 0, "the first run still lives"
    third = make_ctx("campaign-scheduler", **FAST)
    with run_session(third) as conn:
        assert reconcile(conn, third, queue, SYSTEM.now()) == 4
    assert recipient_states(sql, c) == {"pending": 10}, "never handed over: claimable again, attempt not counted"
    assert sql("SELECT max(attempts) FROM campaign_recipients") == [(0,)]


@pytest.mark.process
def test_kill_9_mid_campaign_then_rerun_loses_none_and_sends_none_twice(app_env, make_ctx, sql, provider):
    provider.delay = 0.01
    env = {**FAST, "CAMPAIGN_BATCH_SIZE": "20", "WHATSAPP_CHANNEL": "http", "WHATSAPP_API_URL": provider.url,
           "WHATSAPP_API_TOKEN": "test-token"}
    t = tenant(sql)
    c = campaign(sql, t, phones(400), channel="whatsapp")
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "jobs", "run", "campaign-scheduler"], cwd=REPO,
                            env={**app_env, **env, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(provider.delivered) >= 90, 30, "a few batches delivered")
    finally:
        proc.kill()
        proc.wait()
    states = recipient_states(sql, c)
    assert states.get("pending", 0) > 0 and states.get("sent", 0) > 0
    wait_until(lambda: sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'appliance-cli'")
               == [(0,)], 10, "the killed run's session to end")
    campaigns.run(make_ctx("campaign-scheduler", **env))
    assert recipient_states(sql, c) == {"sent": 400}
    assert len(provider.delivered) == 400 and set(provider.delivered.values()) == {1}


@pytest.mark.process
def test_two_workers_on_one_large_campaign_send_each_recipient_once(tmp_path, app_env, sql, provider):
    t = tenant(sql)
    c = campaign(sql, t, phones(1500), channel="whatsapp")
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", {}), ["campaign-scheduler"],
                     SCHEDULE_CAMPAIGN_SCHEDULER="1s", CAMPAIGN_BATCH_SIZE="50", CAMPAIGN_BATCH_DELAY="0",
                     CAMPAIGN_RATE_LIMIT="0", CAMPAIGN_RUN_BUDGET="0.4", WHATSAPP_CHANNEL="http",
                     WHATSAPP_API_URL=provider.url, WHATSAPP_API_TOKEN="test-token", LOCK_TTL="5")
    workers = [WorkerProcess(env, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        for worker in workers:
            worker.wait_for_log("worker started", 20)
        wait_until(lambda: sql("SELECT status FROM campaigns WHERE id = %s", (c,)) == [("completed",)], 60,
                   "the campaign to complete")
    finally:
        for worker in workers:
            worker.terminate()
    assert len(provider.delivered) == 1500 and set(provider.delivered.values()) == {1}
    assert recipient_states(sql, c) == {"sent": 1500}
    runs = sql("SELECT count(*) FROM job_runs WHERE job = 'campaign-scheduler' AND processed > 0")
    assert runs[0][0] >= 2, "the campaign took several runs, each within its budget"


def test_two_runs_at_once_after_a_lost_lease_never_send_a_recipient_twice(make_ctx, sql, provider):
    """A newer run starts while the older one is still sending (its lease was lost): the older run's claims
    are left alone while it lives, its results cannot commit, and the next run takes them from the outbox."""
    provider.delay = 0.02
    env = {**FAST, "CAMPAIGN_BATCH_SIZE": "10", "WHATSAPP_CHANNEL": "http", "WHATSAPP_API_URL": provider.url,
           "WHATSAPP_API_TOKEN": "test-token"}
    t = tenant(sql)
    c = campaign(sql, t, phones(60), channel="whatsapp")
    outcomes: dict[str, str] = {}

    def run(name: str) -> None:
        try:
            campaigns.run(make_ctx("campaign-scheduler", **env))
            outcomes[name] = "finished"
        except LockLost:
            outcomes[name] = "lock lost"

    older = threading.Thread(target=run, args=("older",))
    older.start()
    wait_until(lambda: len(provider.delivered) >= 3, 10, "the older run to be sending")
    newer = threading.Thread(target=run, args=("newer",))
    newer.start()
    older.join(30)
    newer.join(30)
    assert outcomes == {"older": "lock lost", "newer": "finished"}
    campaigns.run(make_ctx("campaign-scheduler", **env))
    assert recipient_states(sql, c) == {"sent": 60}
    assert len(provider.delivered) == 60 and set(provider.delivered.values()) == {1}
