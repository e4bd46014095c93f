"""``lead-reminder-scheduler`` (every ``LEAD_REMINDER_INTERVAL`` minutes): one email reminder to the lead's
agent for each follow-up that has come due.

A follow-up is a lead's ``next_follow_up_at``. Once it has passed, the run inserts a ``reminders`` row for
(lead, due time); the table's unique key on that pair makes it exactly one row however often and on however
many replicas the job runs, and moving the follow-up to a new time makes a new one. The rows are then sent
like campaign recipients (``appliance.packs.crm.jobs.sending``: claimed, sent through the outbox under the key
``reminder:ID``, reconciled after a crash), so each due follow-up yields one reminder. Leads without an
owner, and leads of suspended tenants, get none.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from psycopg import sql

from appliance.packs.crm.channels import Delivery, Message
from appliance.packs.crm.jobs.claims import fenced, run_resources
from appliance.packs.crm.jobs.contacts import check_email
from appliance.packs.crm.jobs.sending import SendQueue, claim, reconcile, send
from appliance.sdk import iso, one

if TYPE_CHECKING:
    import psycopg

    from appliance.packs.crm.channels import Channels
    from appliance.sdk import RunContext

BATCH = 500


def run(ctx: RunContext) -> dict[str, int]:
    """The job: create the due reminders, then send them; returns its summary."""
    with run_resources(ctx) as (conn, channels):
        summary = process(conn, ctx, channels)
        with fenced(conn, ctx, complete=True):
            return summary


def process(conn: psycopg.Connection, ctx: RunContext, channels: Channels) -> dict[str, int]:
    """Reconcile, create the due reminders, send them in batches, report the backlog. ``conn`` is the run's
    session (``run_session``); the wall time is the run's clock. Returns counts:
    reconciled, created, and reminders per outcome."""
    now = ctx.clock.now
    crm = ctx.config.crm
    queue = SendQueue("reminders", "reminder", crm.campaign_max_attempts, crm.campaign_retry_backoff)
    summary: Counter[str] = Counter(reconciled=reconcile(conn, ctx, queue, now()))
    created = summary["created"] = create_due(conn, ctx, now())
    if created:
        ctx.log.info("%d follow-ups came due", created)
    returning = sql.SQL("id, lead_id, agent_id, due_at")
    while True:
        ctx.checkpoint()
        rows = claim(conn, ctx, queue, BATCH, now(), returning=returning)
        if not rows:
            break
        messages, refused = _messages(conn, queue, rows)
        counts = send(conn, ctx, queue, channels.email, messages, refused, now())
        ctx.processed(counts.get(Delivery.SENT, 0))
        summary.update({outcome.value: n for outcome, n in counts.items()})
        if counts.get(Delivery.SKIPPED):
            break
    pending = one(conn.execute("SELECT count(*) FROM reminders WHERE status = 'pending'"))[0]
    ctx.set_backlog("reminders_pending", pending)
    return dict(summary)


def create_due(conn: psycopg.Connection, ctx: RunContext, now) -> int:
    """Insert one reminder per due follow-up that has none yet; returns how many were inserted."""
    with fenced(conn, ctx):
        cursor = conn.execute(
            "INSERT INTO reminders (tenant_id, lead_id, agent_id, due_at) "
            "SELECT l.tenant_id, l.id, l.owner_id, l.next_follow_up_at FROM leads l "
            "JOIN tenants t ON t.id = l.tenant_id AND t.status = 'active' "
            "WHERE l.next_follow_up_at <= %s AND l.owner_id IS NOT NULL "
            "ON CONFLICT (lead_id, due_at) DO NOTHING", (now,))
        return cursor.rowcount


def _messages(conn: psycopg.Connection, queue: SendQueue, rows: list[tuple]) -> tuple[dict, dict[int, str]]:
    details = {r[0]: r[1:] for r in conn.execute(
        "SELECT r.id, r.tenant_id, l.name, l.email, l.phone, l.status, a.name, a.email FROM reminders r "
        "JOIN leads l ON l.id = r.lead_id LEFT JOIN agents a ON a.id = r.agent_id WHERE r.id = ANY(%s)",
        ([r[0] for r in rows],)).fetchall()}
    messages, refused = {}, {}
    for row_id, _lead, _agent, due_at in rows:
        if row_id not in details or details[row_id][6] is None:
            refused[row_id] = "the lead or its agent no longer exists"
            continue
        tenant_id, lead, lead_email, lead_phone, status, agent, agent_email = details[row_id]
        address, problem = check_email(agent_email)
        if problem:
            refused[row_id] = f"agent {agent}: {problem}"
            continue
        contact = ", ".join(filter(None, (lead_email, lead_phone))) or "no contact details"
        body = (f"Hello {agent},\n\nFollow-up due {iso(due_at)} with {lead} ({contact}), status {status}.\n")
        messages[row_id] = Message(queue.key(row_id), tenant_id, "email", address, f"Follow up with {lead}", body,
                                   {"lead_id": _lead})
    return messages, refused
