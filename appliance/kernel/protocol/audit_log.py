"""The audit log: who changed what, in PostgreSQL (``audit_log``), the record of truth of operator actions.

Every pause, resume, trigger, backfill, lock clear, dead-letter retry and drop, and a job's spec changing, is one
row: the actor (``admin-token`` or ``jwt:<sub>`` for the admin API, ``cli:<user>@<host>`` for the CLI, the worker
for what it does by itself), the time (PostgreSQL's clock), the action, its target, the reason given, and the
state before and after. Values are masked (``Redactor``) before they are stored. ``appliance audit-log`` and
``GET /api/audit-log`` read it. Not to be confused with ``appliance audit`` (``appliance.kernel.protocol.audit``),
the checker of the slot ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from appliance.config.env import EnvReader
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.json_object import JsonObject
from appliance.kernel.runtime.redaction import Redactor

READ_AT_MOST = 10_000


def parse_since(text: str) -> Callable[[datetime], datetime]:
    """A duration ago (``30m``, ``24h``, ``7d``) or an ISO 8601 time (UTC when it names no zone), as a function of
    now; ``ValueError`` saying what was expected."""
    env = EnvReader({"SINCE": text})
    seconds = env.duration("SINCE", -1.0)
    if not env.problems and seconds >= 0:
        return lambda now: now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since must be a duration like 30m or 24h, or an ISO time, not {text!r}") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return lambda _now: when


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: str
    actor: str
    action: str
    target: str
    reason: str | None
    before: Any
    after: Any
    detail: str | None

    def to_json(self) -> JsonObject:
        return {"id": self.id, "at": self.at, "actor": self.actor, "action": self.action, "target": self.target,
                "reason": self.reason, "before": self.before, "after": self.after, "detail": self.detail}


def record(conn: psycopg.Connection, redact: Redactor, actor: str, action: str, target: str,
           reason: str | None = None, before: Any = None, after: Any = None, detail: str | None = None) -> AuditRow:
    """Write one row (in the caller's transaction, or at once in autocommit mode); returns it as stored."""
    row = conn.execute(
        "INSERT INTO audit_log (actor, action, target, reason, before, after, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, at",
        (redact.text(actor), action, target, redact.text(reason) if reason else reason,
         None if before is None else Jsonb(redact.value(before)),
         None if after is None else Jsonb(redact.value(after)), redact.text(detail) if detail else detail)).fetchone()
    assert row is not None
    return AuditRow(row[0], iso(row[1]), actor, action, target, reason, redact.value(before), redact.value(after),
                    detail)


def read(conn: psycopg.Connection, since: datetime | None = None, limit: int = 100,
         target: str | None = None) -> list[AuditRow]:
    """The newest ``limit`` rows (since ``since``, of ``target``), newest first."""
    rows = conn.execute(
        "SELECT id, at, actor, action, target, reason, before, after, detail FROM audit_log "
        "WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s) "
        "AND (%(target)s::text IS NULL OR target = %(target)s) "
        "ORDER BY at DESC, id DESC LIMIT %(limit)s",
        {"since": since, "target": target, "limit": min(limit, READ_AT_MOST)}).fetchall()
    return [AuditRow(i, iso(at), *rest) for i, at, *rest in rows]
