"""Rows for the job tests, inserted through plain SQL."""

from __future__ import annotations

import json
from datetime import datetime

ALWAYS_OPEN = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def tenant(sql, name: str = "Acme", **columns) -> int:
    values = {"name": name, **columns}
    if "business_hours" in values:
        values["business_hours"] = json.dumps(values["business_hours"])
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    return sql(f"INSERT INTO tenants ({names}) VALUES ({marks}) RETURNING id", list(values.values()))[0][0]


def campaign(sql, tenant_id: int, contacts: list[str], channel: str = "email", status: str = "scheduled",
             scheduled_at: datetime | None = None, template: str = "Hello $name") -> int:
    campaign_id = sql("INSERT INTO campaigns (tenant_id, name, channel, subject, template, status, scheduled_at) "
                      "VALUES (%s, 'Spring offer', %s, 'Offer for $name', %s, %s, coalesce(%s, now())) RETURNING id",
                      (tenant_id, channel, template, status, scheduled_at))[0][0]
    sql("INSERT INTO campaign_recipients (campaign_id, contact, name) "
        "SELECT %s, c, 'Lead ' || n FROM unnest(%s::text[]) WITH ORDINALITY AS u(c, n)", (campaign_id, contacts))
    return campaign_id


def emails(n: int, start: int = 0) -> list[str]:
    return [f"lead{i}@example.com" for i in range(start, start + n)]


def phones(n: int, start: int = 0) -> list[str]:
    return [f"+1202555{i:04d}" for i in range(start, start + n)]


def recipient_states(sql, campaign_id: int) -> dict[str, int]:
    return dict(sql("SELECT status, count(*) FROM campaign_recipients WHERE campaign_id = %s GROUP BY status",
                    (campaign_id,)))
