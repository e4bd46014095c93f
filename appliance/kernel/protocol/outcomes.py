"""The run and slot vocabulary shared by the runner, the ledger, the history, the metrics and the sidecar.

A *run* is one attempt of a job under its lease (a row of ``job_runs``); a *slot* is one instant of a job's
schedule, which ends as exactly one row of ``job_slots`` (``appliance.kernel.protocol.ledger``) whatever happened to it.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    # -- runs and slots
    SUCCESS = "success"  # the run's effect committed (under its fence)
    CANCELLED = "cancelled"  # stopped at a checkpoint because the worker was stopping
    LEASE_LOST = "lease_lost"  # the lease was lost and a newer run took the job: nothing committed at the end
    ABANDONED = "abandoned"  # its worker died (kill -9, SIGKILL, cut off after SHUTDOWN_TIMEOUT)
    TIMED_OUT = "timed_out"  # passed its timeout: stopped at a checkpoint, or ended hard (appliance.worker.timeouts)
    CANCELLED_BY_NEWER = "cancelled_by_newer"  # a newer slot's run took the job (overlap = cancel_other)
    # -- runs only
    RUNNING = "running"  # holds the lease now
    RETRYING = "retrying"  # this attempt failed; a retry of the same slot is due
    FAILURE = "failure"  # this attempt failed (its slot ends as failed or dead_lettered)
    # -- slots only
    FAILED = "failed"  # failed, and no retry ran (a later slot came first, or the worker stopped)
    DEAD_LETTERED = "dead_lettered"  # failed after its last retry; the dead-letter list has it
    SKIPPED_LOCKED = "skipped_locked"  # an earlier run still held the job
    SKIPPED_UNAVAILABLE = "skipped_unavailable"  # Redis or PostgreSQL was down at the slot
    PAUSED = "paused"  # the job was paused
    MISSED = "missed"  # no worker ran it in time (downtime longer than the job's grace)
    COALESCED = "coalesced"  # its late run would have run into the next slot, which ran instead
    SKIPPED_OVERLAP = "skipped_overlap"  # its job was running and its overlap policy did not start it
    SKIPPED_CALENDAR = "skipped_calendar"  # a calendar of the job excludes it (the reason names it)


#: Slot outcomes after which a takeover or a misfire may still run the slot once (nothing of it committed,
#: and nobody decided against running it).
RERUNNABLE = frozenset({Outcome.ABANDONED, Outcome.SKIPPED_UNAVAILABLE})
