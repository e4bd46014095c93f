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


# Every lease due on one instant (a herd), each exactly as ACQUIRE takes it, in one round trip.
# KEYS[1] appliance:running; then for the i-th run (from 0): KEYS[2+2i] lock:<job>, KEYS[3+2i] appliance:slot:<job>
# ARGV for the i-th run: ARGV[1+5i] owner token, ARGV[2+5i] ttl ms, ARGV[3+5i] slot epoch ms, ARGV[4+5i] job name,
# ARGV[5+5i] JSON of the run, stored in appliance:running while it lasts
# Returns {claim, pttl, claim, pttl, ...}, one pair per run in the order given.
ACQUIRE_MANY = """
local out = {}
for i = 0, (#KEYS - 1) / 2 - 1 do
  local lock, marker, a = KEYS[2 + 2 * i], KEYS[3 + 2 * i], 5 * i
  local slot = tonumber(ARGV[a + 3])
  local done = tonumber(redis.call('HGET', marker, 'done') or '-1')
  local claim, pttl = 'ok', 0
  if done == slot then claim = 'done'
  elseif done > slot then claim = 'passed'
  elseif redis.call('EXISTS', lock) == 1 then
    pttl = redis.call('PTTL', lock)
    if redis.call('HGET', marker, 'claimed') == ARGV[a + 3] then claim = 'running' else claim = 'locked' end
  else
    redis.call('SET', lock, ARGV[a + 1], 'PX', ARGV[a + 2])
    redis.call('HSET', marker, 'claimed', ARGV[a + 3])
    redis.call('HSET', KEYS[1], ARGV[a + 4], ARGV[a + 5])
  end
  out[#out + 1] = claim
  out[#out + 1] = pttl
end
return out
"""

# The ends of many runs, each exactly as FINISH records it, in one round trip.
# KEYS[1] appliance:running  KEYS[2] appliance:last-run  KEYS[3] appliance:last-success  KEYS[4] appliance:counts
# KEYS[5] appliance:alerts  KEYS[6] appliance:alert-states; then for the i-th run (from 0): KEYS[7+3i] its lease
# (lock:<job>, or lock:<job>:<slot>), KEYS[8+3i] appliance:slot:<job>, KEYS[9+3i] appliance:history:<job>
# ARGV[1] history length; then for the i-th run: ARGV[2+8i] owner token, ARGV[3+8i] job, ARGV[4+8i] run JSON,
# ARGV[5+8i] outcome, ARGV[6+8i] slot epoch ms to mark done or "", ARGV[7+8i] epoch seconds of success or "",
# ARGV[8+8i] items processed, ARGV[9+8i] the run's field in appliance:running
# Returns {ours, streak, warned, ours, streak, warned, ...}, FINISH's answer for each run in the order given.
FINISH_MANY = """
local out = {}
for i = 0, (#KEYS - 6) / 3 - 1 do
  local lock, marker, history, a = KEYS[7 + 3 * i], KEYS[8 + 3 * i], KEYS[9 + 3 * i], 1 + 8 * i
  local owner, job, record, outcome = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local ours = 0
  if redis.call('GET', lock) == owner then
    redis.call('DEL', lock)
    ours = 1
  end
  if ARGV[a + 5] ~= '' then
    local done = tonumber(redis.call('HGET', marker, 'done') or '-1')
    if tonumber(ARGV[a + 5]) > done then redis.call('HSET', marker, 'done', ARGV[a + 5]) end
  end
  redis.call('HDEL', KEYS[1], ARGV[a + 8])
  redis.call('LPUSH', history, record)
  redis.call('LTRIM', history, 0, tonumber(ARGV[1]) - 1)
  redis.call('HSET', KEYS[2], job, record)
  if ARGV[a + 6] ~= '' then redis.call('HSET', KEYS[3], job, ARGV[a + 6]) end
  redis.call('HINCRBY', KEYS[4], job .. ':' .. outcome, 1)
  if tonumber(ARGV[a + 7]) > 0 then redis.call('HINCRBY', KEYS[4], job .. ':processed', ARGV[a + 7]) end
  local streak, warned = 0, 0
  if outcome == 'success' then
    streak = tonumber(redis.call('HGET', KEYS[5], job) or '0')
    if streak > 0 then redis.call('HDEL', KEYS[5], job) end
    if redis.call('HGET', KEYS[6], 'intermittent:' .. job) == 'warning' then warned = 1 end
  end
  out[#out + 1] = ours
  out[#out + 1] = streak
  out[#out + 1] = warned
end
return out
"""


@dataclass(frozen=True)
class Take:
    """One lease of a herd (``acquire_many``): as ``acquire``'s arguments, for a scheduled slot."""

    job: str
    token: str
    ttl: float
    slot_ms: int
    running_json: str


@dataclass(frozen=True)
class End:
    """One run's end (``finish_many``): as ``finish``'s arguments."""

    job: str
    token: str
    record_json: str
    outcome: str
    done_slot_ms: int | None
    success_at: float | None
    processed: int
    lease: str | None = None


@dataclass
class Scripts:
    acquire: Callable[..., Any]
    renew: Callable[..., Any]
    release: Callable[..., Any]
    finish: Callable[..., Any]
    acquire_slot: Callable[..., Any]
    acquire_many: Callable[..., Any]
    finish_many: Callable[..., Any]


def register(client: redis.Redis) -> Scripts:
    """Register the scripts (EVALSHA with a transparent reload after a Redis restart)."""
    return Scripts(*(client.register_script(s) for s in (ACQUIRE, RENEW, RELEASE, FINISH, ACQUIRE_SLOT,
                                                          ACQUIRE_MANY, FINISH_MANY)))


def acquire_many(scripts: Scripts, takes: list[Take]) -> list[tuple[Claim, int]]:
    """``acquire`` for every lease of a herd in one round trip; the answers in the order of ``takes``."""
    lock_keys: list[str] = [keys.RUNNING]
    args: list[Any] = []
    for t in takes:
        lock_keys += [keys.lock(t.job), keys.slot(t.job)]
        args += [t.token, int(t.ttl * 1000), t.slot_ms, t.job, t.running_json]
    flat = scripts.acquire_many(keys=lock_keys, args=args)
    return [(Claim(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]


def finish_many(scripts: Scripts, ends: list[End], history_limit: int) -> list[tuple[bool, int, bool]]:
    """``finish`` for many runs in one round trip; the answers in the order of ``ends``."""
    run_keys: list[str] = [keys.RUNNING, keys.LAST_RUN, keys.LAST_SUCCESS, keys.COUNTS, keys.ALERTS,
                           keys.ALERT_STATES]
    args: list[Any] = [history_limit]
    for e in ends:
        run_keys += [keys.lock(e.lease or e.job), keys.slot(e.job), keys.history(e.job)]
        args += [e.token, e.job, e.record_json, e.outcome, "" if e.done_slot_ms is None else e.done_slot_ms,
                 "" if e.success_at is None else f"{e.success_at:.3f}", e.processed, e.lease or e.job]
    flat = scripts.finish_many(keys=run_keys, args=args)
    return [(bool(flat[i]), int(flat[i + 1]), bool(flat[i + 2])) for i in range(0, len(flat), 3)]


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
