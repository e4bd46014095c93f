"""Leases on ``lock:<job>``: acquire with a per-slot marker, renew and release only by the owner.

Each operation is one Lua script, so each is one round trip and atomic. The happy path of a slot is two
round trips: ``acquire`` and ``finish`` (release plus the run record, see ``appliance.kernel.protocol.state.runs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from appliance.kernel.protocol import keys


class Claim(StrEnum):
    """Answer of ``acquire``."""

    OK = "ok"  # the lease is ours; run the slot
    DONE = "done"  # this slot already finished somewhere: nothing to do
    #: A later slot already finished: this one ran before it, or was passed over by a worker whose clock is
    #: ahead (docs/worker.md "Clocks"). Not run; a first attempt records it ``missed``, which a row it already
    #: has outranks.
    PASSED = "passed"
    RUNNING = "running"  # another replica is running this very slot
    LOCKED = "locked"  # a run of an earlier slot (or a manual run) still holds the job


# KEYS[1] lock:<job>   KEYS[2] appliance:slot:<job>   KEYS[3] appliance:running
# ARGV[1] owner token  ARGV[2] ttl ms  ARGV[3] slot epoch ms, or "" for a manual run outside the slot sequence
# ARGV[4] job name     ARGV[5] JSON of the run, stored in appliance:running while it lasts
# Returns {claim, pttl of the current holder or 0}.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
local slot = ARGV[3]
if slot ~= '' then
  local done = tonumber(redis.call('HGET', KEYS[2], 'done') or '-1')
  if done == tonumber(slot) then return {'done', 0} end
  if done > tonumber(slot) then return {'passed', 0} end
end
if holder then
  local claimed = redis.call('HGET', KEYS[2], 'claimed')
  if slot ~= '' and claimed == slot then return {'running', redis.call('PTTL', KEYS[1])} end
  return {'locked', redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if slot ~= '' then redis.call('HSET', KEYS[2], 'claimed', slot) end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
return {'ok', 0}
"""

# overlap = allow: the lease of one slot's run, so runs of different slots hold different leases.
# KEYS[1] lock:<job>:<slot>   KEYS[2] appliance:slot:<job>   KEYS[3] appliance:running
# KEYS[4] appliance:slot-leases:<job> (the per-slot lease keys held; a member whose key expired is dropped here)
# ARGV[1] owner token  ARGV[2] ttl ms  ARGV[3] slot epoch ms  ARGV[4] the run's field in appliance:running
# ARGV[5] JSON of the run  ARGV[6] max_concurrent
# Returns {claim, pttl}: done (this slot finished), running (a run of this slot holds its lease), locked
# (max_concurrent runs of the job hold theirs), ok. Whether an earlier slot is done is PostgreSQL's to say
# (its per-slot fences): under allow a later slot may finish first.
ACQUIRE_SLOT = """
local done = tonumber(redis.call('HGET', KEYS[2], 'done') or '-1')
if done == tonumber(ARGV[3]) then return {'done', 0} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'running', redis.call('PTTL', KEYS[1])} end
local held = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if redis.call('EXISTS', key) == 1 then held = held + 1 else redis.call('SREM', KEYS[4], key) end
end
if held >= tonumber(ARGV[6]) then return {'locked', 0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[4], KEYS[1])
local claimed = tonumber(redis.call('HGET', KEYS[2], 'claimed') or '-1')
if tonumber(ARGV[3]) > claimed then redis.call('HSET', KEYS[2], 'claimed', ARGV[3]) end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
return {'ok', 0}
"""

# KEYS[1] lock:<job>   ARGV[1] owner token   ARGV[2] ttl ms
# Returns 1 when the lease was extended, 0 when it is no longer ours (expired, deleted, taken).
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lock:<job>   ARGV[1] owner token
# Returns 1 when our lease was deleted, 0 when it was not ours any more.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] lock:<job>  KEYS[2] appliance:slot:<job>  KEYS[3] appliance:running  KEYS[4] appliance:history:<job>
# KEYS[5] appliance:last-run  KEYS[6] appliance:last-success  KEYS[7] appliance:counts  KEYS[8] appliance:alerts
# KEYS[9] appliance:alert-states
# ARGV[1] owner token  ARGV[2] job  ARGV[3] run JSON  ARGV[4] outcome  ARGV[5] slot epoch ms to mark done or ""
# ARGV[6] history length  ARGV[7] epoch seconds of success or ""  ARGV[8] items processed
# ARGV[9] the job's "failing often" alert condition (intermittent:<job>)  ARGV[10] the run's field in
# appliance:running (the job, or <job>:<slot> for a slot's own lease under overlap = allow)
# Releases the lease if still ours and records the run in one step. Returns {1 if the lease was still ours,
# the failure streak that a success ended (reset here), 1 if the job's "failing often" warning is on}: the
# alerter needs no round trip of its own after a success unless that warning is on.
FINISH = """
local ours = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  ours = 1
end
if ARGV[5] ~= '' then
  local done = tonumber(redis.call('HGET', KEYS[2], 'done') or '-1')
  if tonumber(ARGV[5]) > done then redis.call('HSET', KEYS[2], 'done', ARGV[5]) end
end
redis.call('HDEL', KEYS[3], ARGV[10])
redis.call('LPUSH', KEYS[4], ARGV[3])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
redis.call('HSET', KEYS[5], ARGV[2], ARGV[3])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[6], ARGV[2], ARGV[7]) end
redis.call('HINCRBY', KEYS[7], ARGV[2] .. ':' .. ARGV[4], 1)
if tonumber(ARGV[8]) > 0 then redis.call('HINCRBY', KEYS[7], ARGV[2] .. ':processed', ARGV[8]) end
local streak = 0
local warned = 0
if ARGV[4] == 'success' then
  streak = tonumber(redis.call('HGET', KEYS[8], ARGV[2]) or '0')
  if streak > 0 then redis.call('HDEL', KEYS[8], ARGV[2]) end
  if redis.call('HGET', KEYS[9], ARGV[9]) == 'warning' then warned = 1 end
end
return {ours, streak, warned}
"""


@dataclass
class Scripts:
    acquire: Callable[..., Any]
    renew: Callable[..., Any]
    release: Callable[..., Any]
    finish: Callable[..., Any]
    acquire_slot: Callable[..., Any]


def register(client: redis.Redis) -> Scripts:
    """Register the scripts (EVALSHA with a transparent reload after a Redis restart)."""
    return Scripts(*(client.register_script(s) for s in (ACQUIRE, RENEW, RELEASE, FINISH, ACQUIRE_SLOT)))


def acquire_slot(scripts: Scripts, job: str, lease: str, token: str, ttl: float, slot_ms: int, running_json: str,
                 max_concurrent: int) -> tuple[Claim, int]:
    """Take the lease of one slot's run (overlap = allow); ``lease`` is its name (``<job>:<slot>``), its key
    ``lock:<lease>``."""
    claim, pttl = scripts.acquire_slot(keys=[keys.lock(lease), keys.slot(job), keys.RUNNING, keys.slot_leases(job)],
                                       args=[token, int(ttl * 1000), slot_ms, lease, running_json, max_concurrent])
    return Claim(claim), int(pttl)


def acquire(scripts: Scripts, job: str, token: str, ttl: float, slot_ms: int | None,
            running_json: str = "{}") -> tuple[Claim, int]:
    claim, pttl = scripts.acquire(keys=[keys.lock(job), keys.slot(job), keys.RUNNING],
                                  args=[token, int(ttl * 1000), "" if slot_ms is None else slot_ms, job, running_json])
    return Claim(claim), int(pttl)


def finish(scripts: Scripts, job: str, token: str, record_json: str, outcome: str, done_slot_ms: int | None,
           history_limit: int, success_at: float | None, processed: int,
           lease: str | None = None) -> tuple[bool, int, bool]:
    """Release the lease (if still ours) and record the run. Returns whether the lease was still ours and,
    for a success, the failure streak it ended and whether the job's "failing often" warning is on.
    ``lease``: the lease's name when it is not the job's (a slot's own under overlap = allow)."""
    ours, streak, warned = scripts.finish(
        keys=[keys.lock(lease or job), keys.slot(job), keys.RUNNING, keys.history(job), keys.LAST_RUN,
              keys.LAST_SUCCESS, keys.COUNTS, keys.ALERTS, keys.ALERT_STATES],
        args=[token, job, record_json, outcome, "" if done_slot_ms is None else done_slot_ms, history_limit,
              "" if success_at is None else f"{success_at:.3f}", processed, intermittent_condition(job),
              lease or job],
    )
    return bool(ours), int(streak), bool(warned)


def intermittent_condition(job: str) -> str:
    """The name of a job's "failing often" alert condition in ``appliance:alert-states``."""
    return f"intermittent:{job}"


def renew(scripts: Scripts, job: str, token: str, ttl: float) -> bool:
    return bool(scripts.renew(keys=[keys.lock(job)], args=[token, int(ttl * 1000)]))


def release(scripts: Scripts, job: str, token: str) -> bool:
    return bool(scripts.release(keys=[keys.lock(job)], args=[token]))
