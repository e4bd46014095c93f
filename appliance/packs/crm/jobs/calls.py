"""``call-scheduler`` (every ``CALL_SCHEDULER_INTERVAL`` seconds): dial queued calls that are due, only
inside each tenant's business hours, at most N at a time per tenant.

Each tick:

1. reconcile calls left in ``dialing`` without a provider call id by runs that are gone, from their outbox
   rows (as ``appliance.packs.crm.jobs.sending`` does for messages). The voice provider de-duplicates on the key
   ``call:ID:ATTEMPT``, so an interrupted dial goes back to the queue without counting the attempt and is
   dialled again under the same key;
2. poll the provider for calls it holds (``dialing`` with a provider call id): a call that is over is
   ``completed`` when answered; otherwise it is queued again after a backoff (``CALL_RETRY_BACKOFF``, doubled
   per attempt) until ``CALL_MAX_ATTEMPTS``, then ``failed``; a call with no final state after
   ``CALL_MAX_DURATION`` fails;
3. for each active tenant with due calls: outside its business hours (time zone, weekdays, DST-correct, and
   its holidays: dates, a country's public holidays, blackout windows; ``appliance.packs.crm.jobs.hours``) the
   due calls move to the next opening; inside, up to its free
   slots (``max_concurrent_calls`` or ``CALL_MAX_CONCURRENT``, minus calls dialling) are claimed with ``FOR
   UPDATE SKIP LOCKED`` and dialled. An invalid number fails with its reason. With the ``outbox`` channel a
   call is recorded and finished at once (outcome ``recorded``).

Every dial attempt leaves a ``call_attempts`` row (the call record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.packs.crm.channels import Channels, Delivery, Message, Result, deliver
from appliance.packs.crm.channels.outbox import lookup
from appliance.packs.crm.jobs.callstate import poll, settle_calls
from appliance.packs.crm.jobs.claims import fenced, orphaned_fences, run_resources
from appliance.packs.crm.jobs.contacts import check_phone
from appliance.packs.crm.jobs.hours import BusinessHours
from appliance.packs.crm.jobs.sending import from_outbox
from appliance.sdk import one

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

    from appliance.sdk import RunContext

_DUE_TENANTS = """
SELECT t.id, t.timezone, t.business_hours, t.holidays, t.holiday_country, t.blackouts,
       coalesce(t.max_concurrent_calls, %(cap)s),
       (SELECT count(*) FROM calls d WHERE d.tenant_id = t.id AND d.status = 'dialing')
FROM tenants t
WHERE t.status = 'active'
  AND EXISTS (SELECT 1 FROM calls c WHERE c.tenant_id = t.id AND c.status = 'queued' AND c.scheduled_at <= %(now)s)
ORDER BY t.id
"""

_CLAIM = """
UPDATE calls c SET status = 'dialing', attempts = c.attempts + 1, claim_fence = %(fence)s, dialed_at = %(now)s,
                   provider_call_id = NULL
FROM (SELECT due.id FROM unnest(%(tenants)s::bigint[], %(free)s::int[]) AS f(tenant_id, free)
      CROSS JOIN LATERAL (SELECT q.id FROM calls q
                          WHERE q.tenant_id = f.tenant_id AND q.status = 'queued' AND q.scheduled_at <= %(now)s
                          ORDER BY q.scheduled_at, q.id LIMIT f.free FOR UPDATE SKIP LOCKED) due) picked
WHERE c.id = picked.id
RETURNING c.id, c.tenant_id, c.lead_id, c.phone, c.attempts
"""


def run(ctx: RunContext) -> dict[str, int]:
    """The job: one tick (see the module docstring); returns its counts."""
    with run_resources(ctx) as (conn, channels):
        counts = tick(conn, ctx, channels, ctx.clock.now())
        with fenced(conn, ctx, complete=True):
            return counts


def tick(conn: psycopg.Connection, ctx: RunContext, channels: Channels, now: datetime) -> dict[str, int]:
    """One tick at ``now``; returns counts (reconciled, polled, rescheduled, dialled, failed)."""
    counts = {"reconciled": reconcile_calls(conn, ctx, now)}
    counts["polled"] = poll(conn, ctx, channels.calls, now) if channels.calls is not None else 0
    counts.update(dispatch(conn, ctx, channels, now))
    ctx.processed(counts["dialled"])
    queued = one(conn.execute("SELECT count(*) FROM calls WHERE status = 'queued' AND scheduled_at <= %s",
                              (now,)))[0]
    ctx.set_backlog("calls_queued", queued)
    return counts


def dispatch(conn: psycopg.Connection, ctx: RunContext, channels: Channels, now: datetime) -> dict[str, int]:
    """Reschedule due calls of closed tenants to their next opening; claim and dial those of open ones."""
    crm = ctx.config.crm
    closed: dict[int, datetime | None] = {}
    free: dict[int, int] = {}
    for tenant_id, zone, hours, holidays, country, blackouts, cap, dialing in conn.execute(
            _DUE_TENANTS, {"cap": crm.call_max_concurrent, "now": now}).fetchall():
        try:
            opening = BusinessHours.parse(zone, hours, holidays, country, blackouts).next_opening(now)
        except ValueError as exc:
            ctx.log.warning("tenant %d: calls not dialled: %s", tenant_id, exc)
            continue
        if opening != now:
            closed[tenant_id] = opening
        elif cap > dialing:
            free[tenant_id] = cap - dialing
    rescheduled = _reschedule(conn, ctx, closed, now)
    if not free:
        return {"rescheduled": rescheduled, "dialled": 0, "failed": 0}
    with fenced(conn, ctx):
        rows = conn.execute(_CLAIM, {"fence": ctx.fence, "now": now, "tenants": list(free),
                                     "free": list(free.values())}).fetchall()
    messages, results = {}, {}
    for call_id, tenant_id, lead_id, phone, attempt in rows:
        key = f"call:{call_id}:{attempt}"
        number, problem = check_phone(phone)
        if problem:
            results[call_id] = Result(key, Delivery.FAILED, error=problem)
        else:
            messages[call_id] = Message(key, tenant_id, "voice", number,
                                        extra={"call_id": call_id, "lead_id": lead_id, "tenant_id": tenant_id})
    ids = list(messages)
    results.update(zip(ids, deliver(conn, channels.voice, [messages[i] for i in ids]), strict=True))
    recorded = set(ids) if channels.voice.name == "outbox" else set()
    settle_calls(conn, ctx, results, recorded, now)
    failed = sum(1 for r in results.values() if r.outcome is Delivery.FAILED)
    return {"rescheduled": rescheduled, "dialled": len(rows) - failed, "failed": failed}


def _reschedule(conn: psycopg.Connection, ctx: RunContext, closed: dict[int, datetime | None],
                now: datetime) -> int:
    """Move due calls of closed tenants to their next opening; a tenant that never opens fails them."""
    if not closed:
        return 0
    opens = {t: at for t, at in closed.items() if at is not None}
    never = [t for t, at in closed.items() if at is None]
    with fenced(conn, ctx):
        moved = conn.execute(
            "UPDATE calls c SET scheduled_at = o.at FROM unnest(%s::bigint[], %s::timestamptz[]) AS o(t, at) "
            "WHERE c.tenant_id = o.t AND c.status = 'queued' AND c.scheduled_at <= %s",
            (list(opens), list(opens.values()), now)).rowcount
        if never:
            conn.execute("UPDATE calls SET status = 'failed', finished_at = %s, error = %s WHERE tenant_id = ANY(%s) "
                         "AND status = 'queued' AND scheduled_at <= %s",
                         (now, "the tenant's business hours never open", never, now))
    return moved


def reconcile_calls(conn: psycopg.Connection, ctx: RunContext, now: datetime) -> int:
    """Settle calls that runs now gone left ``dialing`` before the provider's answer was recorded."""
    by_fence: dict[int, list[str]] = dict(conn.execute(
        "SELECT claim_fence, array_agg(id || ':' || attempts) FROM calls WHERE status = 'dialing' "
        "AND provider_call_id IS NULL AND claim_fence <> %s GROUP BY claim_fence", (ctx.fence,)).fetchall())
    settled = 0
    for fence in orphaned_fences(conn, ctx.job, by_fence):
        keys = {int(pair.split(":")[0]): f"call:{pair}" for pair in by_fence[fence]}
        rows = lookup(conn, list(keys.values()))
        results = {}
        for call_id, result in from_outbox(rows, keys).items():
            # an interrupted dial is repeated under the same key (the attempt is not counted, so the next
            # claim makes the same call:ID:ATTEMPT): the provider answers the first call instead of dialling
            interrupted = result.outcome is Delivery.RETRY and rows.get(keys[call_id], ("",))[0] == "sending"
            results[call_id] = Result(result.key, Delivery.SKIPPED, error=result.error, retry_after=0.0) \
                if interrupted else result
        recorded = {c for c, key in keys.items() if rows.get(key, ("", ""))[1] == "outbox"}
        settle_calls(conn, ctx, results, recorded, now, claimed_by=fence)
        ctx.log.warning("reconciled %d calls left dialling by run fence %d", len(results), fence)
        settled += len(results)
    return settled
