"""The cluster's shared state in Redis: what workers publish and what the CLI and the sidecar read and change.

Nothing here imports the worker's runtime, so the sidecar uses this module directly. Every value is JSON.
Run records (``history``, ``last_run``) have the keys ``run_id, job, slot, trigger, attempt, worker, started,
finished, duration_ms, outcome, processed, error, fence, summary`` (``summary``: the JSON object the job
returned, or null); times are ISO 8601 UTC strings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis

from appliance.errors import Conflict, NotFound
from appliance.kernel.protocol import keys
from appliance.kernel.protocol.owner import iso, new_run_id, parse_token
from appliance.kernel.runtime.clock import SYSTEM, Clock


def _loads(value: str | None) -> Any:
    return json.loads(value) if value else None


class ClusterState:
    """Reads and control operations on the state shared by every worker on one Redis.

    ``clock`` stamps what is written (pause, trigger, audit and dead-letter times) and measures the ages
    read back (heartbeats, locks, open breakers).
    """

    def __init__(self, client: redis.Redis, clock: Clock = SYSTEM):
        self.r = client
        self.clock = clock

    # -- jobs -----------------------------------------------------------------------------------------
    def publish_jobs(self, jobs: dict[str, dict[str, Any]]) -> None:
        """Workers publish their job table (schedule, description, settings, next runs)."""
        if jobs:
            self.r.hset(keys.JOBS, mapping={name: json.dumps(info) for name, info in jobs.items()})

    def job_names(self) -> list[str]:
        return sorted(self.r.hkeys(keys.JOBS))

    def require_job(self, job: str) -> None:
        if not self.r.hexists(keys.JOBS, job):
            raise NotFound(f"unknown job {job!r}; known jobs: {', '.join(self.job_names()) or 'none published yet'}")

    def jobs(self) -> list[dict[str, Any]]:
        """Every published job with its pause state, run in progress, last run, lock holder and counts."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.JOBS)
        pipe.hgetall(keys.PAUSED)
        pipe.hgetall(keys.RUNNING)
        pipe.hgetall(keys.LAST_RUN)
        pipe.hgetall(keys.LAST_SUCCESS)
        published, paused, running, last, success = pipe.execute()
        names = sorted(published)
        holders = self.r.mget([keys.lock(n) for n in names]) if names else []
        result = []
        for name, holder in zip(names, holders, strict=True):
            info = _loads(published[name]) or {}
            last_success = success.get(name)
            result.append({
                **info,
                "name": name,
                "paused": name in paused,
                "paused_by": (_loads(paused.get(name)) or {}).get("by"),
                "running": _loads(running.get(name)),
                "last_run": _loads(last.get(name)),
                "last_success": iso_from_epoch(float(last_success)) if last_success else None,
                "lock_holder": holder,
            })
        return result

    # -- pause, resume, trigger -----------------------------------------------------------------------
    def pause(self, job: str, by: str) -> None:
        self.require_job(job)
        self.r.hset(keys.PAUSED, job, json.dumps({"by": by, "at": iso(self.clock.now())}))
        self.r.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "pause", "job": job}))

    def resume(self, job: str, by: str) -> None:
        self.require_job(job)
        self.r.hdel(keys.PAUSED, job)
        self.r.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "resume", "job": job, "by": by}))

    def paused(self) -> set[str]:
        return set(self.r.hkeys(keys.PAUSED))

    def trigger(self, job: str, by: str, reason: str = "manual", payload: dict[str, Any] | None = None) -> str:
        """Ask the cluster to run ``job`` once now, under its lock; one worker takes it. Returns its id."""
        self.require_job(job)
        trigger_id = new_run_id()
        entry = {"id": trigger_id, "job": job, "by": by, "reason": reason, "at": iso(self.clock.now()),
                 "payload": payload}
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(keys.triggers(job), json.dumps(entry))
        pipe.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "trigger", "job": job}))
        pipe.execute()
        return trigger_id

    def take_trigger(self, job: str) -> dict[str, Any] | None:
        """The oldest pending trigger of ``job``, removed atomically (one worker gets it)."""
        return _loads(self.r.rpop(keys.triggers(job)))

    def pending_triggers(self, job: str) -> int:
        return int(self.r.llen(keys.triggers(job)))

    # -- pause-all (seed 002's scheduler stop and start) ----------------------------------------------
    def pause_all(self, by: str) -> dict[str, Any]:
        """Stop every job's slots cluster-wide (persisted) until ``resume_all``; the jobs' own pause flags are
        kept. Slots that come meanwhile are recorded ``paused``; a trigger still runs its job once. Returns
        the pause (an earlier one is kept, with who set it and when)."""
        entry = {"by": by, "at": iso(self.clock.now())}
        pipe = self.r.pipeline(transaction=False)
        pipe.set(keys.PAUSED_ALL, json.dumps(entry), nx=True)
        pipe.get(keys.PAUSED_ALL)
        pipe.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "pause-all", "by": by}))
        return _loads(pipe.execute()[1]) or entry

    def resume_all(self, by: str) -> dict[str, Any] | None:
        """End a pause-all; each job goes on from its next slot (the paused ones are not run). Returns the
        pause it ended, or None when none was in force."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.PAUSED_ALL)
        pipe.delete(keys.PAUSED_ALL)
        pipe.publish(keys.CONTROL_CHANNEL, json.dumps({"action": "resume-all", "by": by}))
        return _loads(pipe.execute()[0])

    def paused_all(self) -> dict[str, Any] | None:
        """The pause-all in force (``{"by", "at"}``), or None."""
        return _loads(self.r.get(keys.PAUSED_ALL))

    # -- circuit breakers -----------------------------------------------------------------------------
    def breakers(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every circuit breaker that has recorded something (``appliance.kernel.runtime.breaker``): ``state`` (``open``
        past its reset time reads ``half_open``: the next call is the trial one), consecutive ``failures``,
        ``opened_at``, ``changed_at``, ``retry_in_seconds`` while open, ``threshold``, ``reset_seconds`` and
        how often it opened (``opened_total``)."""
        names = sorted(self.r.smembers(keys.BREAKERS))
        if not names:
            return []
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.breaker(name))
        now_ms = (self.clock.time() if now is None else now) * 1000
        result = []
        for name, raw in zip(names, pipe.execute(), strict=True):
            state = raw.get("state") or "closed"
            opened, reset = _int(raw.get("opened_ms")), _int(raw.get("reset_ms"))
            retry_in = None
            if state == "open" and opened is not None and reset is not None:
                retry_in = max(0.0, (opened + reset - now_ms) / 1000)
                state = "open" if retry_in > 0 else "half_open"
            result.append({
                "name": name, "state": state, "failures": _int(raw.get("failures")) or 0,
                "opened_at": iso_from_epoch(opened / 1000) if opened else None,
                "changed_at": iso_from_epoch(int(raw["changed_ms"]) / 1000) if raw.get("changed_ms") else None,
                "retry_in_seconds": None if retry_in is None else round(retry_in, 3),
                "threshold": _int(raw.get("threshold")),
                "reset_seconds": None if reset is None else reset / 1000,
                "opened_total": _int(raw.get("opened_total")) or 0,
            })
        return result

    # -- history and counters -------------------------------------------------------------------------
    def history(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent runs, newest first, of one job or of all jobs."""
        names = [job] if job else self.job_names()
        if job:
            self.require_job(job)
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.lrange(keys.history(name), 0, limit - 1)
        runs = [json.loads(item) for items in pipe.execute() for item in items]
        runs.sort(key=lambda run: run.get("started") or "", reverse=True)
        return runs[:limit]

    def counts(self) -> dict[str, int]:
        """Counters ``<job>:<outcome>`` and ``<job>:processed`` since the Redis was created."""
        return {k: int(v) for k, v in self.r.hgetall(keys.COUNTS).items()}

    def count(self, job: str, outcome: str, n: int = 1) -> None:
        self.r.hincrby(keys.COUNTS, f"{job}:{outcome}", n)

    # -- workers --------------------------------------------------------------------------------------
    def beat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.set(keys.heartbeat(worker_id), json.dumps(info), px=int(ttl * 1000))
        pipe.sadd(keys.WORKERS, worker_id)
        pipe.execute()

    def forget_worker(self, worker_id: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(keys.heartbeat(worker_id))
        pipe.srem(keys.WORKERS, worker_id)
        pipe.execute()

    def workers(self) -> list[dict[str, Any]]:
        """Live workers (heartbeat present), each with ``id`` and ``heartbeat_age`` in seconds."""
        ids = sorted(self.r.smembers(keys.WORKERS))
        if not ids:
            return []
        beats = self.r.mget([keys.heartbeat(i) for i in ids])
        live, dead = [], []
        for worker, beat in zip(ids, beats, strict=True):
            if beat is None:
                dead.append(worker)
                continue
            info = json.loads(beat)
            info["id"] = worker
            now = self.clock.time()
            info["heartbeat_age"] = max(0.0, now - float(info.get("beat_at", now)))
            live.append(info)
        if dead:
            self.r.srem(keys.WORKERS, *dead)
        return live

    def is_alive(self, worker_id: str) -> bool:
        return bool(self.r.exists(keys.heartbeat(worker_id)))

    # -- locks ----------------------------------------------------------------------------------------
    def locks(self) -> list[dict[str, Any]]:
        """Every ``lock:*`` key: holder token, parsed owner, age, TTL left and whether the holder is alive."""
        names = sorted(self.r.scan_iter(match="lock:*", count=500))
        if not names:
            return []
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
            pipe.pttl(name)
        values = pipe.execute()
        result = []
        for i, name in enumerate(names):
            holder, pttl = values[2 * i], values[2 * i + 1]
            if holder is None:
                continue
            result.append(self._lock_info(name.removeprefix("lock:"), holder, pttl))
        return result

    def _lock_info(self, job: str, holder: str, pttl: int) -> dict[str, Any]:
        owner = parse_token(holder)
        age = None
        if owner:
            try:
                started = datetime.fromisoformat(owner.started.replace("Z", "+00:00")).timestamp()
                age = round(self.clock.time() - started, 3)
            except ValueError:
                age = None
        return {
            "job": job,
            "key": keys.lock(job),
            "holder": holder,
            "host": owner.host if owner else None,
            "pid": owner.pid if owner else None,
            "run_id": owner.run_id if owner else None,
            "age_seconds": age,
            "ttl_seconds": round(pttl / 1000, 3) if pttl and pttl > 0 else None,
            "holder_alive": bool(owner and self.is_alive(owner.worker_id)),
        }

    def clear_lock(self, job: str, force: bool = False) -> dict[str, Any]:
        """Delete ``lock:<job>``. Refused (``Conflict``) while its holder's heartbeat is alive unless ``force``."""
        key = keys.lock(job)
        holder = self.r.get(key)
        if holder is None:
            raise NotFound(f"no lock is held on {job!r} ({key} does not exist)")
        info = self._lock_info(job, holder, self.r.pttl(key))
        if info["holder_alive"] and not force:
            raise Conflict(f"{key} is held by a live worker ({holder}); wait for its run to end, or force it")
        # Delete only the value we inspected, so a lock taken meanwhile by another run is left alone.
        if not self.r.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
                           "return 0", 1, key, holder):
            raise Conflict(f"{key} changed hands while being cleared; look again")
        return info

    # -- dead letters ---------------------------------------------------------------------------------
    def add_dead_letter(self, entry: dict[str, Any]) -> str:
        dead_id = entry.get("id") or new_run_id()
        entry = {**entry, "id": dead_id, "died_at": entry.get("died_at") or iso(self.clock.now())}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.DLQ, dead_id, json.dumps(entry))
        pipe.zadd(keys.DLQ_INDEX, {dead_id: self.clock.time()})
        pipe.hincrby(keys.COUNTS, f"{entry.get('job')}:dead_letter", 1)
        pipe.execute()
        return dead_id

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        ids = self.r.zrevrange(keys.DLQ_INDEX, 0, limit - 1)
        if not ids:
            return []
        return [json.loads(v) for v in self.r.hmget(keys.DLQ, ids) if v]

    def dead_letter(self, dead_id: str) -> dict[str, Any]:
        entry = _loads(self.r.hget(keys.DLQ, dead_id))
        if entry is None:
            raise NotFound(f"no dead letter with id {dead_id!r}")
        return entry

    def drop_dead_letter(self, dead_id: str) -> dict[str, Any]:
        entry = self.dead_letter(dead_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(keys.DLQ, dead_id)
        pipe.zrem(keys.DLQ_INDEX, dead_id)
        pipe.execute()
        return entry

    def retry_dead_letter(self, dead_id: str, by: str) -> str:
        """Trigger the dead letter's job once more and remove it from the list; returns the trigger id."""
        entry = self.dead_letter(dead_id)
        trigger_id = self.trigger(entry["job"], by=by, reason=f"dead-letter retry {dead_id}",
                                  payload={"dead_letter": dead_id, "slot": entry.get("slot")})
        self.drop_dead_letter(dead_id)
        return trigger_id

    # -- audit ----------------------------------------------------------------------------------------
    def audit(self, who: str, action: str, target: str, detail: str = "") -> dict[str, Any]:
        entry = {"at": iso(self.clock.now()), "who": who, "action": action, "target": target, "detail": detail}
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(keys.AUDIT, {json.dumps(entry): self.clock.time()})
        pipe.zremrangebyrank(keys.AUDIT, 0, -keys.AUDIT_LIMIT - 1)
        pipe.execute()
        return entry

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(v) for v in self.r.zrevrange(keys.AUDIT, 0, limit - 1)]


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def iso_from_epoch(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, UTC))
