"""The outbox table: every message is recorded there before it is handed to a transport, under its
idempotency key, and its result is written back afterwards.

``deliver`` is the one way messages leave. Because the row is committed before the hand-off, a run that dies
mid-send leaves evidence: no row means the message never left; ``sent``/``recorded`` means it did; ``sending``
means the hand-off was interrupted (safe to repeat only on an idempotent transport).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.packs.crm.channels.message import Delivery, Message, Result

if TYPE_CHECKING:
    import psycopg

    from appliance.packs.crm.channels.message import Transport

#: Outbox rows in these states need no further hand-off.
DONE = ("recorded", "sent")
_ROW_STATUS = {Delivery.SENT: "sent", Delivery.FAILED: "failed", Delivery.RETRY: "retry",
               Delivery.UNKNOWN: "unknown", Delivery.SKIPPED: "retry"}

_INSERT = """
INSERT INTO outbox (idempotency_key, tenant_id, channel, transport, recipient, subject, body, status, sent_at)
SELECT k, t, c, %(transport)s, r, s, b, %(status)s, CASE WHEN %(status)s = 'recorded' THEN now() END
FROM unnest(%(keys)s::text[], %(tenants)s::bigint[], %(channels)s::text[], %(recipients)s::text[],
            %(subjects)s::text[], %(bodies)s::text[]) AS m(k, t, c, r, s, b)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, id
"""


def deliver(conn: psycopg.Connection, transport: Transport, messages: list[Message]) -> list[Result]:
    """Record ``messages`` in the outbox, hand the ones not yet delivered to ``transport``, record the results.

    ``conn`` must be in autocommit mode: the outbox rows are committed before the hand-off. A key already
    delivered (an earlier run sent it and died before saying so) comes back SENT without a second hand-off.
    """
    if not messages:
        return []
    recording = transport.name == "outbox"
    status = "recorded" if recording else "sending"
    inserted: dict[str, int] = dict(conn.execute(_INSERT, {
        "transport": transport.name, "status": status, "keys": [m.key for m in messages],
        "tenants": [m.tenant_id for m in messages], "channels": [m.channel for m in messages],
        "recipients": [m.to for m in messages], "subjects": [m.subject for m in messages],
        "bodies": [m.body for m in messages],
    }).fetchall())
    known: dict[str, Result] = {}
    again = [m.key for m in messages if m.key not in inserted]
    if again:
        for key, row_id, provider_id in conn.execute(
            "SELECT idempotency_key, id, provider_message_id FROM outbox "
            "WHERE idempotency_key = ANY(%s) AND status IN ('recorded', 'sent')", (again,)):
            known[key] = Result(key, Delivery.SENT, provider_id or f"outbox:{row_id}")
        retry = [key for key in again if key not in known]
        if retry:
            inserted.update(conn.execute(
                "UPDATE outbox SET status = %s, transport = %s, error = NULL, "
                "sent_at = CASE WHEN %s = 'recorded' THEN now() END "
                "WHERE idempotency_key = ANY(%s) RETURNING idempotency_key, id",
                (status, transport.name, status, retry)).fetchall())
    if recording:
        return [known.get(m.key) or Result(m.key, Delivery.SENT, f"outbox:{inserted[m.key]}") for m in messages]
    to_send = [m for m in messages if m.key not in known]
    results = {r.key: r for r in transport.send(to_send)} if to_send else {}
    record_results(conn, list(results.values()))
    return [known.get(m.key) or results[m.key] for m in messages]


def record_results(conn: psycopg.Connection, results: list[Result]) -> None:
    """Write each result back to its outbox row."""
    if not results:
        return
    conn.execute(
        "UPDATE outbox o SET status = r.status, provider_message_id = coalesce(r.provider_id, o.provider_message_id), "
        "error = r.error, sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE o.sent_at END "
        "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS r(k, status, provider_id, error) "
        "WHERE o.idempotency_key = r.k",
        ([r.key for r in results], [_ROW_STATUS[r.outcome] for r in results],
         [r.provider_id for r in results], [r.error for r in results]),
    )


def lookup(conn: psycopg.Connection, keys: list[str]) -> dict[str, tuple[str, str, str | None, str | None]]:
    """key -> (status, transport, provider id, error) of the outbox rows that exist among ``keys``."""
    rows = conn.execute(
        "SELECT idempotency_key, status, transport, coalesce(provider_message_id, 'outbox:' || id), error "
        "FROM outbox WHERE idempotency_key = ANY(%s)", (keys,)).fetchall()
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}
