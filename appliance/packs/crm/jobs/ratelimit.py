"""The per-tenant send rate limit: at most N messages handed to channels per rolling minute.

The outbox is the ledger (every message is recorded there when it is handed over), so the limit holds across
jobs, runs and replicas without a second counter. N is the tenant's ``send_rate_per_minute``, or
``CAMPAIGN_RATE_LIMIT`` when that is NULL; 0 means no limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.sdk import one

if TYPE_CHECKING:
    import psycopg

#: Returned when a tenant has no limit.
UNLIMITED = 1 << 30


def allowance(conn: psycopg.Connection, tenant_id: int, default_limit: int) -> int:
    """How many more messages ``tenant_id`` may send now."""
    row = conn.execute("SELECT coalesce(send_rate_per_minute, %s) FROM tenants WHERE id = %s",
                       (default_limit, tenant_id)).fetchone()
    limit = row[0] if row else default_limit
    if not limit:
        return UNLIMITED
    used = one(conn.execute("SELECT count(*) FROM outbox WHERE tenant_id = %s "
                            "AND created_at > now() - interval '1 minute'", (tenant_id,)))[0]
    return max(0, limit - used)
