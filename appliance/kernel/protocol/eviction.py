"""Redis' eviction policy, read where the worker starts and where /health reports.

A lease is a Redis key with a TTL. Under ``maxmemory`` with any policy but ``noeviction``, Redis may
delete keys to make room: the ``allkeys-*`` policies any key, the ``volatile-*`` policies keys with a TTL,
which is every lease. A lease evicted under its live holder lets a second run start: the fence then keeps
the stale run from committing, but the job's work is done twice. With ``noeviction`` Redis refuses writes
instead, which the worker sees as Redis unavailable (slots skipped and recorded, nothing run twice).
"""

from __future__ import annotations

import redis

SAFE = "noeviction"


def eviction_policy(client: redis.Redis) -> str:
    """The server's ``maxmemory-policy``, from INFO (allowed to a restricted ACL user, unlike CONFIG GET)."""
    return str(client.info("memory").get("maxmemory_policy", SAFE))


def eviction_problem(policy: str) -> str | None:
    """Why ``policy`` endangers leases, or None when it is safe."""
    if policy == SAFE:
        return None
    return (f"Redis maxmemory-policy is {policy}: under memory pressure it may evict lock keys of running "
            f"jobs; set it to {SAFE} (CONFIG SET maxmemory-policy {SAFE}, or in redis.conf)")
