"""Every Redis key the appliance uses, in one place.

Lock keys are seed 004's bare ``lock:<job>`` so that ``redis-cli KEYS 'lock:*'`` and
``redis-cli DEL lock:campaign-scheduler`` work as its runbook says. Everything else lives under
``appliance:`` so it never collides with the application's own keys on a shared Redis.
"""

PREFIX = "appliance:"

#: Pub/sub channel on which a worker is woken at once (trigger, pause, resume).
CONTROL_CHANNEL = PREFIX + "control"
#: Set of worker ids that have published a heartbeat (pruned when the heartbeat key is gone).
WORKERS = PREFIX + "workers"
#: Hash job -> JSON description published by workers (schedule, next runs, settings).
JOBS = PREFIX + "jobs"
#: Hash job -> JSON {"by", "at"} for paused jobs; absent means running.
PAUSED = PREFIX + "paused"
#: Hash job -> JSON of the run in progress (``appliance.kernel.protocol.state.runs.RunInProgress``).
RUNNING = PREFIX + "running"
#: Hash job -> JSON of the last finished run.
LAST_RUN = PREFIX + "last-run"
#: Hash job -> epoch seconds of the last successful run.
LAST_SUCCESS = PREFIX + "last-success"
#: Hash "<job>:<outcome>", "<job>:processed" and "<job>:lease_lost" -> counter, cluster-wide since the Redis was
#: created (``appliance.kernel.protocol.state.history``).
COUNTS = PREFIX + "counts"
#: Hash id -> JSON dead letter; sorted set id by time of death for ordered listing.
DLQ = PREFIX + "dlq"
DLQ_INDEX = PREFIX + "dlq:index"
#: Hash job -> JSON {"state": "ok"|"failing", "consecutive": n} for alert de-duplication.
ALERTS = PREFIX + "alerts"
#: Set of the names of every circuit breaker that has recorded something (``breaker(name)`` holds its state).
BREAKERS = PREFIX + "breakers"
#: JSON {"by", "at"} while every job is paused (pause-all); absent means the jobs' own pause flags decide.
PAUSED_ALL = PREFIX + "paused-all"
#: Hash alert key ("breaker:NAME", "stale:JOB", "intermittent:JOB", "eviction") -> the state last alerted
#: ("warning" or "ok"), so each warning is sent once per change of state, cluster-wide.
ALERT_STATES = PREFIX + "alert-states"
#: Hash job -> the run id a newer slot asked to stop at its next checkpoint (overlap = cancel_other).
CANCEL = PREFIX + "cancel"
#: Prefix of the start ticks taken under MAX_STARTS_PER_SECOND (``starts:<tick>``, one start each, expiring).
STARTS = PREFIX + "starts:"
#: Sorted set of recent admin actions (audit trail), score = epoch seconds.
AUDIT = PREFIX + "audit"
AUDIT_LIMIT = 1000


def lock(job: str) -> str:
    """The lease of ``job``: value is the owner token ``host:pid:started:nonce``."""
    return f"lock:{job}"


def slot_lease(job: str, slot_iso: str) -> str:
    """The name of one slot's lease under overlap = allow, ``<job>:<slot>``, whose key is ``lock(...)`` of it,
    ``lock:<job>:<slot>``: runs of different slots hold different leases; ``lock:<job>`` stays the job's (manual
    runs, and every other policy). It is also the run's field in ``appliance:running``."""
    return f"{job}:{slot_iso}"


def slot_leases(job: str) -> str:
    """Set of the per-slot lease keys of ``job`` held now (overlap = allow), counted against max_concurrent."""
    return f"{PREFIX}slot-leases:{job}"


def slot(job: str) -> str:
    """Hash beside the lock: ``claimed`` and ``done`` are the epoch ms of the last claimed and last finished
    slot, so a replica whose clock lags never repeats a slot that already ran."""
    return f"{PREFIX}slot:{job}"


def heartbeat(worker_id: str) -> str:
    """A worker's heartbeat, a JSON document with a TTL of ``HEARTBEAT_TTL``."""
    return f"{PREFIX}heartbeat:{worker_id}"


def history(job: str) -> str:
    """List of the last ``HISTORY_LIMIT`` runs of ``job`` as JSON, newest first."""
    return f"{PREFIX}history:{job}"


def triggers(job: str) -> str:
    """List of pending manual triggers of ``job`` (JSON), taken by exactly one worker with LPOP."""
    return f"{PREFIX}triggers:{job}"


def breaker(name: str) -> str:
    """Hash of circuit breaker ``name``: ``state`` (closed, open, half_open), consecutive ``failures``,
    ``opened_ms`` and ``changed_ms`` (epoch ms), ``probe_until_ms`` (the trial call's lease), ``threshold``,
    ``reset_ms`` and ``opened_total``."""
    return f"{PREFIX}breaker:{name}"


def failures(job: str) -> str:
    """Sorted set of ``job``'s recent failure times (member and score: epoch seconds), trimmed to the alert
    window: the warning on failures that keep coming without reaching the critical streak."""
    return f"{PREFIX}failures:{job}"
