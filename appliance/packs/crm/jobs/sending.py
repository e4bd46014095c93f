"""Tables of things each sent once (campaign recipients, reminders): claim, hand over, settle, reconcile.

A row goes ``pending`` -> ``sending`` (claimed: this run's fence in ``claim_fence``) -> ``sent`` | ``failed`` |
``unknown``, or back to ``pending`` with ``next_attempt_at`` after a transient failure, until
``max_attempts``. Its idempotency key is ``PREFIX:ID``: the outbox row and the provider de-duplicate on it.

Claims and results are fenced writes (``appliance.packs.crm.jobs.claims``); the outbox rows in between are facts about
the world and are committed whatever happens to the run. So a run that dies or loses its lease after handing
messages over leaves rows in ``sending`` whose outbox rows say what happened, and ``reconcile`` settles them:

- no outbox row: the message never left; the row is claimable again (the attempt is not counted);
- outbox ``recorded``/``sent``/``failed``/``unknown``: that result is taken over, nothing is sent again;
- outbox ``sending`` (the hand-off was interrupted): sent again under the same key where the transport
  de-duplicates (outbox, HTTP providers), otherwise (SMTP) marked ``unknown`` for a person to decide.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.types.json import Jsonb

from appliance.packs.crm.channels import IDEMPOTENT_TRANSPORTS, Delivery, Message, Result, Transport, deliver
from appliance.packs.crm.channels.outbox import lookup
from appliance.packs.crm.jobs.claims import fenced, orphaned_fences

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

    from appliance.sdk import RunContext


@dataclass(frozen=True)
class SendQueue:
    """One table with the claim columns (status, attempts, next_attempt_at, claim_fence, claimed_at, error,
    sent_at, provider_message_id). ``backoff`` seconds before a retry, doubled for each attempt made."""

    table: str
    key_prefix: str
    max_attempts: int
    backoff: float

    def key(self, row_id: int) -> str:
        return f"{self.key_prefix}:{row_id}"


#: ``claim``'s defaults: every due row, and only its id.
EVERY_ROW, ID_ONLY = sql.SQL("TRUE"), sql.SQL("id")


def claim(conn: psycopg.Connection, ctx: RunContext, queue: SendQueue, limit: int, now: datetime,
          scope: sql.Composable = EVERY_ROW, params: dict[str, Any] | None = None,
          returning: sql.Composable = ID_ONLY) -> list[tuple]:
    """Claim up to ``limit`` due pending rows matching ``scope`` (oldest first), skipping rows another
    transaction holds; returns ``returning`` (which starts with ``id``) of each claimed row, by id."""
    query = sql.SQL("""
        UPDATE {table} SET status = 'sending', claim_fence = %(fence)s, claimed_at = %(now)s,
               attempts = attempts + 1
        WHERE id IN (SELECT id FROM {table}
                     WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
                       AND {scope}
                     ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        RETURNING {returning}""").format(table=sql.Identifier(queue.table), scope=scope, returning=returning)
    with fenced(conn, ctx):
        rows = conn.execute(query, {**(params or {}), "fence": ctx.fence, "now": now, "limit": limit}).fetchall()
    return sorted(rows, key=lambda row: row[0])


_SETTLE = """
WITH r AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(outcomes)s::text[], %(providers)s::text[], %(errors)s::text[],
                         %(waits)s::float8[]) AS r(id, outcome, provider_id, error, wait)
), c AS MATERIALIZED (
    -- rows fetched by primary key first, so no plan can walk the partial index of 'sending' rows per id
    SELECT id, attempts, status, claim_fence FROM {table} WHERE id = ANY(%(ids)s::bigint[])
), n AS (
    SELECT r.*, c.attempts - (r.outcome = 'skipped')::int AS made
    FROM c JOIN r ON r.id = c.id
    WHERE c.status = 'sending' AND c.claim_fence = %(claimed_by)s
)
UPDATE {table} t SET
    attempts = n.made,
    status = CASE WHEN n.outcome IN ('sent', 'failed', 'unknown') THEN n.outcome
                  WHEN n.made >= %(max)s THEN 'failed' ELSE 'pending' END,
    error = CASE WHEN n.outcome = 'sent' THEN NULL
                 WHEN n.outcome IN ('retry', 'skipped') AND n.made >= %(max)s
                     THEN 'gave up after ' || n.made || ' attempts: ' || coalesce(n.error, '')
                 ELSE n.error END,
    next_attempt_at = CASE WHEN n.outcome IN ('retry', 'skipped') THEN
        %(now)s + make_interval(secs => coalesce(n.wait, %(backoff)s * 2 ^ greatest(n.made - 1, 0))) END,
    sent_at = CASE WHEN n.outcome = 'sent' THEN %(now)s END,
    provider_message_id = coalesce(n.provider_id, t.provider_message_id),
    claim_fence = NULL
FROM n WHERE t.id = n.id
"""


def settle(conn: psycopg.Connection, ctx: RunContext, queue: SendQueue, results: dict[int, Result],
           now: datetime, claimed_by: int | None = None) -> None:
    """Record each row's result (row id -> result), in one fenced transaction. Only rows still claimed by
    ``claimed_by`` (default: this run) change. RETRY and SKIPPED go back to pending after a backoff (the
    provider's ``Retry-After`` when it gave one) until ``max_attempts``; SKIPPED was never attempted."""
    if not results:
        return
    ids = list(results)
    with fenced(conn, ctx):
        conn.execute(sql.SQL(_SETTLE).format(table=sql.Identifier(queue.table)), {
            "ids": ids, "outcomes": [results[i].outcome.value for i in ids],
            "providers": [results[i].provider_id for i in ids], "errors": [results[i].error for i in ids],
            "waits": [results[i].retry_after for i in ids], "max": queue.max_attempts, "now": now,
            "backoff": queue.backoff, "claimed_by": ctx.fence if claimed_by is None else claimed_by,
        })


def send(conn: psycopg.Connection, ctx: RunContext, queue: SendQueue, transport: Transport,
         messages: dict[int, Message], refused: dict[int, str], now: datetime) -> Counter[Delivery]:
    """Hand ``messages`` (row id -> message) to ``transport`` through the outbox, mark ``refused`` rows
    (row id -> reason, such as an invalid address) failed without sending, and settle all of them.
    Returns how many rows ended with each outcome."""
    results = {row_id: Result(queue.key(row_id), Delivery.FAILED, error=reason) for row_id, reason in refused.items()}
    ids = list(messages)
    results.update(zip(ids, deliver(conn, transport, [messages[i] for i in ids]), strict=True))
    settle(conn, ctx, queue, results, now)
    return Counter(result.outcome for result in results.values())


def reconcile(conn: psycopg.Connection, ctx: RunContext, queue: SendQueue, now: datetime) -> int:
    """Settle rows left in ``sending`` by runs that are gone, from their outbox rows (see the module
    docstring); returns how many rows were settled. Claims of runs still alive are left alone."""
    query = sql.SQL("SELECT claim_fence, array_agg(id) FROM {table} WHERE status = 'sending' "
                    "AND claim_fence <> %s GROUP BY claim_fence").format(table=sql.Identifier(queue.table))
    claims = conn.execute(query, (ctx.fence,)).fetchall()
    by_fence: dict[int, list[int]] = dict(claims)
    settled = 0
    for fence in orphaned_fences(conn, ctx.job, by_fence):
        ids = by_fence[fence]
        keys = {row_id: queue.key(row_id) for row_id in ids}
        results = from_outbox(lookup(conn, list(keys.values())), keys)
        settle(conn, ctx, queue, results, now, claimed_by=fence)
        settled += len(results)
        summary = dict(Counter(result.outcome.value for result in results.values()))
        conn.execute("INSERT INTO activity (kind, detail) VALUES ('reconciled', %s)",
                     (Jsonb({"table": queue.table, "job": ctx.job, "fence": fence, "outcomes": summary}),))
        ctx.log.warning("reconciled %d %s rows left claimed by run fence %d: %s", len(results), queue.table, fence,
                        summary)
    return settled


def from_outbox(rows: dict, keys: dict[int, str]) -> dict[int, Result]:
    """What happened to each claimed row (row id -> idempotency key), from its outbox row (``rows``, as
    ``outbox.lookup`` returns them)."""
    results = {}
    for row_id, key in keys.items():
        found = rows.get(key)
        if found is None:
            results[row_id] = Result(key, Delivery.SKIPPED, error="claimed by a run that stopped before sending",
                                     retry_after=0.0)
            continue
        status, transport, provider_id, error = found
        if status in ("recorded", "sent"):
            results[row_id] = Result(key, Delivery.SENT, provider_id)
        elif status in ("failed", "unknown", "retry"):
            results[row_id] = Result(key, Delivery(status), error=error)
        elif transport in IDEMPOTENT_TRANSPORTS:
            results[row_id] = Result(key, Delivery.RETRY, retry_after=0.0,
                                     error=f"hand-off to {transport} interrupted; sent again under the same key")
        else:
            results[row_id] = Result(key, Delivery.UNKNOWN,
                                     error=f"hand-off to {transport} interrupted; the server may have the message")
    return results
