"""Job pack benchmark: recipients per second through campaign-scheduler with the outbox channel and
CAMPAIGN_BATCH_DELAY=0 (batch size 100 and 1000) against a naive one-row-at-a-time loop in the same run, and
the time of one call-scheduler tick with 100,000 queued calls. Starts its own PostgreSQL in a temp dir."""

from __future__ import annotations

import logging
import statistics
import sys
import time
import uuid
from datetime import timedelta

import psycopg
from psycopg_pool import ConnectionPool

from appliance.kernel.contract.context import RunContext
from appliance.kernel.contract.packs import load_settings
from appliance.kernel.protocol.db.migrate import migrate
from appliance.kernel.protocol.fencing import issue_fence
from appliance.kernel.runtime.clock import SYSTEM
from appliance.packs.crm.channels import build_channels
from appliance.packs.crm.jobs import campaigns
from appliance.packs.crm.jobs.calls import tick
from appliance.packs.crm.jobs.claims import run_session
from tests.services import PostgresServer

RECIPIENTS = 20_000
NAIVE_RECIPIENTS = 3_000
QUEUED_CALLS = 100_000
CALL_TENANTS = 100


def context(pool: ConnectionPool, url: str, job: str, **env: str) -> RunContext:
    config = load_settings({"DATABASE_URL": url, **env}, env_file=None)

    def fence() -> int:
        with pool.connection() as conn:
            return issue_fence(conn, job)

    return RunContext(job=job, slot=SYSTEM.now(), run_id=uuid.uuid4().hex, attempt=1, owner="bench", config=config,
                      redis=None, db=pool, log=logging.LoggerAdapter(logging.getLogger(job), {}), _fence_source=fence)


def new_campaign(conn: psycopg.Connection, recipients: int) -> int:
    tenant = conn.execute("INSERT INTO tenants (name, plan) VALUES ('bench', 'pro') RETURNING id").fetchone()[0]
    campaign = conn.execute("INSERT INTO campaigns (tenant_id, name, channel, subject, template, status, scheduled_at) "
                            "VALUES (%s, 'bench', 'email', 'Hi $name', 'Hello $name', 'scheduled', now()) RETURNING id",
                            (tenant,)).fetchone()[0]
    conn.execute("INSERT INTO campaign_recipients (campaign_id, contact, name) "
                 "SELECT %s, concat('r', n, '@example.com'), concat('R', n) FROM generate_series(1, %s) n",
                 (campaign, recipients))
    conn.execute("VACUUM ANALYZE campaign_recipients")
    return campaign


def bench_campaign(pool: ConnectionPool, url: str, batch: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox, campaign_recipients, campaigns, activity")
        campaign = new_campaign(conn, RECIPIENTS)
    ctx = context(pool, url, "campaign-scheduler", CAMPAIGN_BATCH_SIZE=str(batch), CAMPAIGN_BATCH_DELAY="0",
                  CAMPAIGN_RATE_LIMIT="0", CAMPAIGN_RUN_BUDGET="600")
    t0 = time.perf_counter()
    campaigns.run(ctx)
    elapsed = time.perf_counter() - t0
    with psycopg.connect(url) as conn:
        sent = conn.execute("SELECT count(*) FROM campaign_recipients WHERE campaign_id = %s AND status = 'sent'",
                            (campaign,)).fetchone()[0]
    assert sent == RECIPIENTS, f"only {sent} of {RECIPIENTS} sent"
    return RECIPIENTS / elapsed


def bench_naive(url: str) -> float:
    """The loop the job replaces: claim one row, record one outbox row, mark it sent, commit; repeat."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox, campaign_recipients, campaigns, activity")
        campaign = new_campaign(conn, NAIVE_RECIPIENTS)
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        while True:
            with conn.transaction():
                row = conn.execute("SELECT id, contact, name FROM campaign_recipients WHERE campaign_id = %s AND "
                                   "status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                                   (campaign,)).fetchone()
                if row is None:
                    break
                conn.execute("INSERT INTO outbox (idempotency_key, channel, transport, recipient, body, status) "
                             "VALUES (%s, 'email', 'outbox', %s, %s, 'recorded')",
                             (f"campaign-recipient:{row[0]}", row[1], f"Hello {row[2]}"))
                conn.execute("UPDATE campaign_recipients SET status = 'sent', sent_at = now() WHERE id = %s", (row[0],))
    return NAIVE_RECIPIENTS / (time.perf_counter() - t0)


def bench_call_tick(pool: ConnectionPool, url: str, ticks: int = 5) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (name, plan, business_hours) SELECT concat('calls ', n), 'pro', "
                     "'{\"mon\": [\"00:00-24:00\"], \"tue\": [\"00:00-24:00\"], \"wed\": [\"00:00-24:00\"], "
                     "\"thu\": [\"00:00-24:00\"], \"fri\": [\"00:00-24:00\"], \"sat\": [\"00:00-24:00\"], "
                     "\"sun\": [\"00:00-24:00\"]}' FROM generate_series(1, %s) n", (CALL_TENANTS,))
        conn.execute("INSERT INTO calls (tenant_id, phone, scheduled_at) "
                     "SELECT t.id, concat('+1202555', lpad((n %% 10000)::text, 4, '0')), now() - interval '1 minute' "
                     "FROM generate_series(1, %s) n JOIN tenants t ON t.name = concat('calls ', n %% %s + 1)",
                     (QUEUED_CALLS, CALL_TENANTS))
        conn.execute("VACUUM ANALYZE calls")
    times = []
    now = SYSTEM.now()
    for i in range(ticks):
        ctx = context(pool, url, "call-scheduler")
        channels = build_channels(ctx.config.crm, ctx.sleep)
        with run_session(ctx) as conn:
            t0 = time.perf_counter()
            counts = tick(conn, ctx, channels, now + timedelta(seconds=30 * i))
            times.append((time.perf_counter() - t0) * 1000)
        channels.close()
        assert counts["dialled"] == CALL_TENANTS * ctx.config.crm.call_max_concurrent, counts
    return times


def main(argv: list[str] | None = None) -> None:
    postgres = PostgresServer().start()
    try:
        url = postgres.create_database("bench")
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        with ConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": False}) as pool:
            rates = {batch: bench_campaign(pool, url, batch) for batch in (100, 1000)}
            naive = bench_naive(url)
            print(f"campaign-scheduler, outbox channel, CAMPAIGN_BATCH_DELAY=0, {RECIPIENTS:,} recipients: "
                  f"batch 100 {rates[100]:,.0f}/s, batch 1000 {rates[1000]:,.0f}/s; naive one-row loop "
                  f"({NAIVE_RECIPIENTS:,} recipients) {naive:,.0f}/s; job with batch 100 is "
                  f"{rates[100] / naive:.1f}x the naive loop, batch 1000 {rates[1000] / naive:.1f}x")
            times = bench_call_tick(pool, url)
            print(f"call-scheduler tick with {QUEUED_CALLS:,} queued due calls over {CALL_TENANTS} tenants "
                  f"(dials {CALL_TENANTS}x3 per tick): median {statistics.median(times):.0f} ms, "
                  f"max {max(times):.0f} ms over {len(times)} ticks ({', '.join(f'{t:.0f}' for t in times)} ms)")
    finally:
        postgres.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
