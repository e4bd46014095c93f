"""``campaign-scheduler`` (every minute): due campaigns start sending; recipients go out in batches.

Each run: reconcile recipients left claimed by runs that are gone (``appliance.packs.crm.jobs.sending``); turn
``scheduled`` campaigns whose ``scheduled_at`` has passed into ``sending``; then send the ``sending``
campaigns, oldest first, in batches of ``CAMPAIGN_BATCH_SIZE`` with ``CAMPAIGN_BATCH_DELAY`` between them.
Before each batch the run checks its lease (``ctx.checkpoint``), the campaign's status (a ``paused`` or
``cancelled`` campaign stops there) and the tenant's rate limit; each batch is claimed with ``FOR UPDATE SKIP
LOCKED`` and its results committed before the next, so a run may stop between any two batches and the next
run continues. A run stops taking batches after ``CAMPAIGN_RUN_BUDGET`` seconds instead of holding the lock
for hours. A campaign with no recipient left to send (none ``pending`` or ``sending``) is ``completed``.

Templates use ``$name`` / ``${name}`` placeholders (``string.Template``), filled from the recipient's
``name`` and ``variables``; unknown placeholders stay as written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from string import Template
from typing import TYPE_CHECKING

from psycopg import sql
from psycopg.types.json import Jsonb

from appliance.packs.crm.channels import Channels, Delivery, Message
from appliance.packs.crm.jobs.claims import fenced, run_resources
from appliance.packs.crm.jobs.contacts import check_contact
from appliance.packs.crm.jobs.ratelimit import allowance
from appliance.packs.crm.jobs.sending import SendQueue, claim, reconcile, send
from appliance.sdk import one

if TYPE_CHECKING:
    import psycopg

    from appliance.packs.crm.settings import CrmConfig
    from appliance.sdk import RunContext

KEY_PREFIX = "campaign-recipient"


def recipients_queue(crm: CrmConfig) -> SendQueue:
    return SendQueue("campaign_recipients", KEY_PREFIX, crm.campaign_max_attempts, crm.campaign_retry_backoff)


def run(ctx: RunContext) -> dict[str, int]:
    """The job: one pass over due and sending campaigns (see the module docstring); returns its summary."""
    with run_resources(ctx) as (conn, channels):
        summary = process(conn, ctx, channels)
        with fenced(conn, ctx, complete=True):
            return summary


def process(conn: psycopg.Connection, ctx: RunContext, channels: Channels) -> dict[str, int]:
    """Reconcile, start due campaigns, send within the run budget, report the backlog. ``conn`` is the run's
    session (``run_session``); the wall time is the run's clock. Returns counts:
    reconciled, started, and recipients per outcome."""
    now = ctx.clock.now
    crm = ctx.config.crm
    queue = recipients_queue(crm)
    summary: Counter[str] = Counter(reconciled=reconcile(conn, ctx, queue, now()))
    summary["started"] = len(start_due(conn, ctx, now()))
    deadline = ctx.clock.monotonic() + crm.campaign_run_budget
    for campaign_id, tenant_id, channel, subject, template in conn.execute(
            "SELECT id, tenant_id, channel, subject, template FROM campaigns WHERE status = 'sending' "
            "ORDER BY started_at, id").fetchall():
        if ctx.clock.monotonic() >= deadline:
            break
        campaign = _Campaign(campaign_id, tenant_id, channel, Template(subject), Template(template))
        summary.update(send_campaign(conn, ctx, campaign, channels, queue, deadline))
    pending = one(conn.execute("SELECT count(*) FROM campaign_recipients r JOIN campaigns c ON c.id = r.campaign_id "
                               "WHERE r.status = 'pending' AND c.status IN ('scheduled', 'sending')"))[0]
    ctx.set_backlog("campaign_recipients_pending", pending)
    return dict(summary)


def start_due(conn: psycopg.Connection, ctx: RunContext, now: datetime) -> list[int]:
    """``scheduled`` campaigns whose time has come become ``sending`` (with an activity row each)."""
    with fenced(conn, ctx):
        started = conn.execute(
            "UPDATE campaigns SET status = 'sending', started_at = %s WHERE status = 'scheduled' "
            "AND scheduled_at <= %s RETURNING id, tenant_id", (now, now)).fetchall()
        if started:
            conn.execute("INSERT INTO activity (tenant_id, kind, subject_id) "
                         "SELECT t, 'campaign-started', c FROM unnest(%s::bigint[], %s::bigint[]) AS s(c, t)",
                         ([c for c, _ in started], [t for _, t in started]))
    for campaign_id, _tenant in started:
        ctx.log.info("campaign %d started sending", campaign_id)
    return [c for c, _ in started]


@dataclass(frozen=True)
class _Campaign:
    id: int
    tenant_id: int
    channel: str
    subject: Template
    template: Template

    def message(self, queue: SendQueue, row_id: int, contact: str, name: str, variables: dict) -> Message:
        fields = {**(variables or {}), "name": name or (variables or {}).get("name", "")}
        return Message(queue.key(row_id), self.tenant_id, self.channel, contact,
                       self.subject.safe_substitute(fields), self.template.safe_substitute(fields),
                       {"campaign_id": self.id})


def send_campaign(conn: psycopg.Connection, ctx: RunContext, campaign: _Campaign, channels: Channels,
                  queue: SendQueue, deadline: float) -> Counter[str]:
    """Batches of one campaign until it is done, paused, cancelled, rate-limited or the budget is spent;
    returns how many recipients ended with each outcome."""
    now = ctx.clock.now
    crm = ctx.config.crm
    transport = channels.for_campaign(campaign.channel)
    done: Counter[str] = Counter()
    scope = sql.SQL("campaign_id = %(campaign)s")
    returning = sql.SQL("id, contact, name, variables")
    while True:
        ctx.checkpoint()
        status = conn.execute("SELECT status FROM campaigns WHERE id = %s", (campaign.id,)).fetchone()
        if not status or status[0] != "sending":
            ctx.log.info("campaign %d is %s: stopping", campaign.id, status[0] if status else "gone")
            return done
        room = min(crm.campaign_batch_size, allowance(conn, campaign.tenant_id, crm.campaign_rate_limit))
        if room == 0:
            ctx.log.info("tenant %d reached its send rate limit: campaign %d continues later",
                         campaign.tenant_id, campaign.id)
            return done
        rows = claim(conn, ctx, queue, room, now(), scope, {"campaign": campaign.id}, returning)
        if not rows:
            _complete_if_done(conn, ctx, campaign)
            return done
        messages, refused = {}, {}
        for row_id, contact, name, variables in rows:
            address, problem = check_contact(campaign.channel, contact)
            if problem:
                refused[row_id] = problem
            else:
                messages[row_id] = campaign.message(queue, row_id, address, name, variables)
        counts = send(conn, ctx, queue, transport, messages, refused, now())
        ctx.processed(counts.get(Delivery.SENT, 0))
        done.update({outcome.value: n for outcome, n in counts.items()})
        if counts.get(Delivery.SKIPPED) or ctx.clock.monotonic() >= deadline:
            return done  # the provider's circuit is open, or the run's time is up: the next run continues
        ctx.sleep(crm.campaign_batch_delay)


def _complete_if_done(conn: psycopg.Connection, ctx: RunContext, campaign: _Campaign) -> None:
    with fenced(conn, ctx):
        done = conn.execute(
            "UPDATE campaigns c SET status = 'completed', completed_at = now() WHERE id = %s AND status = 'sending' "
            "AND NOT EXISTS (SELECT 1 FROM campaign_recipients r WHERE r.campaign_id = c.id "
            "                AND r.status IN ('pending', 'sending')) RETURNING id", (campaign.id,)).fetchone()
        if done:
            summary: dict[str, int] = dict(conn.execute(
                "SELECT status, count(*) FROM campaign_recipients WHERE campaign_id = %s GROUP BY status",
                (campaign.id,)).fetchall())
            conn.execute("INSERT INTO activity (tenant_id, kind, subject_id, detail) "
                         "VALUES (%s, 'campaign-completed', %s, %s)", (campaign.tenant_id, campaign.id, Jsonb(summary)))
    if done:
        ctx.log.info("campaign %d completed: %s", campaign.id, summary)
