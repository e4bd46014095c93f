"""``trial-expiration`` (hourly): active trial tenants whose ``trial_ends_at`` has passed are suspended.

Each expiry happens once: the update only matches ``status = 'active'`` rows, and the ``trial-expired``
activity row is written in the same fenced transaction, so a second run, a replica or a retried run finds
nothing left to do and a run that lost its lease commits nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.packs.crm.jobs.claims import fenced, pool_of

if TYPE_CHECKING:

    from appliance.sdk import RunContext

BATCH = 500

_EXPIRE = """
WITH due AS (
    SELECT id FROM tenants WHERE plan = 'trial' AND status = 'active' AND trial_ends_at <= %(now)s
    ORDER BY trial_ends_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), done AS (
    UPDATE tenants t SET status = 'suspended', suspended_at = %(now)s FROM due WHERE t.id = due.id
    RETURNING t.id, t.name, t.trial_ends_at
)
INSERT INTO activity (tenant_id, kind, subject_id, detail)
SELECT id, 'trial-expired', id, jsonb_build_object('name', name, 'trial_ends_at', trial_ends_at) FROM done
RETURNING tenant_id
"""


def run(ctx: RunContext) -> dict[str, int]:
    """The job; returns how many tenants were suspended."""
    at = ctx.clock.now()
    total = 0
    with pool_of(ctx).connection() as conn:
        while True:
            ctx.checkpoint()
            with fenced(conn, ctx):
                expired = [row[0] for row in conn.execute(_EXPIRE, {"now": at, "limit": BATCH}).fetchall()]
            for tenant_id in expired:
                ctx.log.info("tenant %d: trial ended, suspended", tenant_id)
            total += len(expired)
            ctx.processed(len(expired))
            if len(expired) < BATCH:
                break
        with fenced(conn, ctx, complete=True):
            return {"suspended": total}
