"""A slot that finds its job running: what its overlap policy says (``appliance.kernel.contract.policy.Overlap``).

- ``skip``: the slot is recorded ``skipped_overlap``;
- ``buffer_one``: it waits and starts as soon as the run ends; while one slot waits, later ones are skipped;
- ``buffer_all``: every such slot waits, and they start one after the other, in slot order;
- ``cancel_other``: the running run is asked to stop at its next checkpoint (it ends ``cancelled_by_newer``) and
  the slot starts when it has; a slot still waiting from before is skipped, the newest one wins;
- ``allow``: the slot runs beside it under a lease and fence of its own, up to ``max_concurrent`` at once; past
  that it is skipped.

Whatever the policy, a slot that finds the catch-up of an earlier slot running waits for it
(``appliance.worker.catch_up``). The same rules hold whether the run is on this worker (the loop knows it) or on
another replica (the claim finds ``lock:<job>`` held): a waiting slot is kept in ``Buffers`` and tried again when
the local run ends, or every ``REMOTE_POLL`` seconds while another replica's does. A cancel request for a run on
another replica goes through ``appliance:cancel`` and the control channel, which wakes every worker at once.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import redis

from appliance.kernel.contract.policy import Overlap
from appliance.kernel.protocol import keys
from appliance.worker.dispatch import Dispatch

#: How often a slot waiting for a run on another replica tries the lease again.
REMOTE_POLL = 0.2


class Verdict(StrEnum):
    WAIT = "wait"
    SKIP = "skip"
    CANCEL = "cancel"  # cancel the running run, then wait for it


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    #: A slot that waited and is now replaced by this one (cancel_other: the newest wins).
    displaced: Dispatch | None = None


def decide(d: Dispatch, holder: Dispatch | None, waiting: list[Dispatch]) -> Decision:
    """What the first attempt ``d`` does while its job runs (``holder``: the run here, None when on another
    replica); ``waiting``: the slots of the job already waiting here."""
    policy = d.job.policy
    if holder is not None and holder.catch_up and holder.slot < d.slot and policy.overlap is not Overlap.ALLOW:
        return Decision(Verdict.WAIT)
    overlap = policy.overlap
    if overlap is Overlap.BUFFER_ALL:
        return Decision(Verdict.WAIT)
    if overlap is Overlap.BUFFER_ONE:
        if waiting:
            return Decision(Verdict.SKIP, f"its job was running and slot {waiting[0].slot.isoformat()} was "
                                          "buffered already (overlap = buffer_one)")
        return Decision(Verdict.WAIT)
    if overlap is Overlap.CANCEL_OTHER:
        return Decision(Verdict.CANCEL, displaced=waiting[0] if waiting else None)
    if overlap is Overlap.ALLOW:
        return Decision(Verdict.SKIP, f"{policy.max_concurrent} runs of the job were running "
                                      "(overlap = allow, max_concurrent)")
    return Decision(Verdict.SKIP, "its job was running (overlap = skip)")


class Buffers:
    """Slots waiting for the run before them, per job, oldest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Dispatch]] = {}

    def waiting(self, job: str) -> list[Dispatch]:
        with self._lock:
            return list(self._queues.get(job, ()))

    def add(self, d: Dispatch) -> None:
        with self._lock:
            queue = self._queues.setdefault(d.job.name, deque())
            if all(w.slot != d.slot for w in queue):
                queue.append(d)

    def put_back(self, d: Dispatch) -> None:
        """``d`` was tried and must wait again: back at the head."""
        with self._lock:
            queue = self._queues.setdefault(d.job.name, deque())
            if all(w.slot != d.slot for w in queue):
                queue.appendleft(d)

    def remove(self, d: Dispatch) -> None:
        with self._lock:
            queue = self._queues.get(d.job.name)
            if queue is not None and d in queue:
                queue.remove(d)

    def pop(self, job: str) -> Dispatch | None:
        with self._lock:
            queue = self._queues.get(job)
            return queue.popleft() if queue else None


def request_cancel(client: redis.Redis, job: str) -> str | None:
    """Ask the worker running ``job`` to stop that run at its next checkpoint (``cancelled_by_newer``); returns
    the run id asked, None when no run holds the job."""
    held = client.hget(keys.RUNNING, job)
    if not held:
        return None
    run_id = json.loads(held).get("run_id")
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.CANCEL, job, run_id)
    pipe.publish(keys.CONTROL_CHANNEL, f"cancel:{job}")
    pipe.execute()
    return run_id


def cancel_requests(client: redis.Redis) -> dict[str, str]:
    """Job -> the run id a newer slot asked to stop."""
    return dict(client.hgetall(keys.CANCEL))
