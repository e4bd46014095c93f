"""How a call's state moves after a dial or a poll, and the call records (``call_attempts``) that go with it.

``queued`` -> ``dialing`` (claimed) -> ``completed`` | ``failed``, or back to ``queued`` after a backoff
(``CALL_RETRY_BACKOFF`` doubled per attempt, or the provider's ``Retry-After``) until ``CALL_MAX_ATTEMPTS``.
A dial the provider accepted stays ``dialing`` with its provider call id until a poll finds it over.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from appliance.packs.crm.channels.http import ProviderError
from appliance.packs.crm.jobs.claims import fenced
from appliance.sdk import CircuitOpen

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

    from appliance.packs.crm.channels import Result
    from appliance.packs.crm.channels.voice import VoiceProvider
    from appliance.sdk import RunContext

#: Calls polled per tick, oldest dial first.
POLL_LIMIT = 200

_SETTLE = """
WITH r AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(outcomes)s::text[], %(providers)s::text[], %(errors)s::text[],
                         %(waits)s::float8[], %(recorded)s::bool[])
        AS r(id, outcome, provider_id, error, wait, recorded)
), c AS MATERIALIZED (
    -- fetched by primary key first, so the planner cannot pick the partial index of dialling calls per id
    SELECT id, tenant_id, dialed_at, attempts, status, claim_fence FROM calls WHERE id = ANY(%(ids)s::bigint[])
), m AS (
    SELECT r.*, c.tenant_id, c.dialed_at, c.attempts - (r.outcome = 'skipped')::int AS made
    FROM c JOIN r ON r.id = c.id WHERE c.status = 'dialing' AND c.claim_fence = %(claimed_by)s
), n AS (
    SELECT m.*, CASE WHEN m.outcome = 'sent' THEN CASE WHEN m.recorded THEN 'completed' ELSE 'dialing' END
                     WHEN m.outcome IN ('failed', 'unknown') OR m.made >= %(max)s THEN 'failed'
                     ELSE 'queued' END AS next
    FROM m
), u AS (
    UPDATE calls c SET
        attempts = n.made, status = n.next, claim_fence = NULL,
        provider_call_id = CASE WHEN n.outcome = 'sent' AND NOT n.recorded THEN n.provider_id END,
        outcome = CASE WHEN n.next = 'completed' THEN 'recorded' END,
        error = CASE WHEN n.outcome = 'sent' THEN NULL
                     WHEN n.next = 'failed' AND n.outcome IN ('retry', 'skipped')
                         THEN 'gave up after ' || n.made || ' attempts: ' || coalesce(n.error, '')
                     ELSE n.error END,
        scheduled_at = CASE WHEN n.next = 'queued'
            THEN %(now)s + make_interval(secs => coalesce(n.wait, %(backoff)s * 2 ^ greatest(n.made - 1, 0)))
            ELSE c.scheduled_at END,
        finished_at = CASE WHEN n.next IN ('completed', 'failed') THEN %(now)s END
    FROM n WHERE c.id = n.id
    RETURNING c.id, c.tenant_id, c.status, c.provider_call_id, c.error, c.outcome, n.outcome AS result, n.made,
              n.dialed_at
)
INSERT INTO call_attempts (call_id, tenant_id, attempt, started_at, ended_at, provider_call_id, outcome, error)
SELECT id, tenant_id, made, dialed_at, CASE WHEN status <> 'dialing' THEN %(now)s END, provider_call_id,
       coalesce(outcome, CASE WHEN status = 'dialing' THEN NULL ELSE result END), error
FROM u WHERE result <> 'skipped'
"""


def settle_calls(conn: psycopg.Connection, ctx: RunContext, results: dict[int, Result], recorded: set[int],
                 now: datetime, claimed_by: int | None = None) -> None:
    """Apply dial results (call id -> result) to calls still claimed by ``claimed_by`` (default: this run),
    in one fenced transaction. ``recorded``: calls whose SENT means recorded in the outbox (finished now),
    not accepted by a provider (dialling until a poll finds them over). SKIPPED was never attempted."""
    if not results:
        return
    crm = ctx.config.crm
    ids = list(results)
    with fenced(conn, ctx):
        conn.execute(_SETTLE, {
            "ids": ids, "outcomes": [results[i].outcome.value for i in ids],
            "providers": [results[i].provider_id for i in ids], "errors": [results[i].error for i in ids],
            "waits": [results[i].retry_after for i in ids], "recorded": [i in recorded for i in ids],
            "max": crm.call_max_attempts, "backoff": crm.call_retry_backoff, "now": now,
            "claimed_by": ctx.fence if claimed_by is None else claimed_by,
        })


def poll(conn: psycopg.Connection, ctx: RunContext, provider: VoiceProvider, now: datetime) -> int:
    """Ask the provider about calls it holds; finish those that are over (or ran past ``CALL_MAX_DURATION``).
    Returns how many calls changed state."""
    crm = ctx.config.crm
    updates = []
    for call_id, provider_id, attempts, dialed_at in conn.execute(
            "SELECT id, provider_call_id, attempts, dialed_at FROM calls WHERE status = 'dialing' "
            "AND provider_call_id IS NOT NULL ORDER BY dialed_at LIMIT %s", (POLL_LIMIT,)).fetchall():
        ctx.checkpoint()
        try:
            state = provider.status(provider_id)
        except CircuitOpen:
            break
        except ProviderError as exc:
            ctx.log.warning("call %d: status unavailable: %s", call_id, exc)
            continue
        if state.over:
            updates.append(_finish(call_id, attempts, state.status, state.answered, crm, now))
        elif dialed_at and now - dialed_at > timedelta(seconds=crm.call_max_duration):
            updates.append(_finish(call_id, attempts, "timed-out", False, crm, now))
    if updates:
        _apply(conn, ctx, updates, now)
    return len(updates)


def _finish(call_id: int, attempts: int, outcome: str, answered: bool, crm, now: datetime) -> tuple:
    """(id, status, outcome, error, scheduled_at) for a call that is over."""
    if answered:
        return call_id, "completed", outcome, None, None
    if attempts >= crm.call_max_attempts:
        return call_id, "failed", outcome, f"gave up after {attempts} attempts: {outcome}", None
    wait = crm.call_retry_backoff * 2 ** max(attempts - 1, 0)
    return call_id, "queued", outcome, f"attempt {attempts}: {outcome}", now + timedelta(seconds=wait)


def _apply(conn: psycopg.Connection, ctx: RunContext, updates: list[tuple], now: datetime) -> None:
    ids, statuses, outcomes, errors, whens = (list(column) for column in zip(*updates, strict=True))
    with fenced(conn, ctx):
        conn.execute(
            "WITH u AS (UPDATE calls c SET status = v.status, outcome = v.outcome, error = v.error, "
            "  scheduled_at = coalesce(v.at, c.scheduled_at), provider_call_id = CASE WHEN v.status = 'queued' "
            "  THEN NULL ELSE c.provider_call_id END, "
            "  finished_at = CASE WHEN v.status = 'queued' THEN NULL ELSE %(now)s END "
            "  FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(outcomes)s::text[], %(errors)s::text[], "
            "              %(whens)s::timestamptz[]) AS v(id, status, outcome, error, at) "
            "  WHERE c.id = v.id AND c.status = 'dialing' RETURNING c.id, c.attempts, v.outcome, v.error) "
            "UPDATE call_attempts a SET ended_at = %(now)s, outcome = u.outcome, error = u.error "
            "FROM u WHERE a.call_id = u.id AND a.attempt = u.attempts",
            {"ids": ids, "statuses": statuses, "outcomes": outcomes, "errors": errors, "whens": whens, "now": now})
