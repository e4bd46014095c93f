"""A herd: the scheduled slots of many jobs due on one instant, claimed together.

The loop hands every first attempt of a slot due in one pass (``CLAIM_LEAD`` before its instant) to
``take_herd`` instead of claiming each on a thread of its own: one Redis round trip takes every lease
(``locks.acquire_many``: for each job exactly what ``acquire`` does) and one PostgreSQL statement opens every
run that got its lease (``ledger_batches.open_runs``: ``appliance_open_run`` for each, fences issued before any
body runs). What a slot alone would do with each answer, it does here (``Claims.not_taken``, ``opened``,
``not_opened``): a slot not taken, or found done, gets the same row, the same release, the same log line.

A slot whose lease an earlier run of its job still holds before the instant is left to the claim of its own
(``None``), which tries again on the instant itself as it always did.
"""

from __future__ import annotations

import redis

from appliance.kernel.protocol import locks
from appliance.kernel.protocol.ledger_batches import Opening, open_runs
from appliance.kernel.protocol.locks import Claim, Take
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import make_token, new_run_id
from appliance.kernel.runtime import metrics
from appliance.worker.claim import Claims, OpenRun, epoch_ms
from appliance.worker.dispatch import Attempt, Dispatch


def joins_herd(d: Dispatch) -> bool:
    """Whether ``d`` may be claimed with others: a scheduled slot's first attempt under its job's lease."""
    return d.scheduled and d.attempt == 1 and not d.job.policy.per_slot


def take_herd(claims: Claims, herd: list[Dispatch]) -> list[OpenRun | Attempt | None]:
    """Claim every slot of ``herd`` (see ``joins_herd``); one answer per slot, in order: the open run, the
    ``Attempt`` of a slot that does not run, or None for a slot left to a claim of its own."""
    runs: list[OpenRun] = []
    takes: list[Take] = []
    for d in herd:
        run_id, started = new_run_id(), claims.clock.now()
        owner = make_token(run_id, started)
        runs.append(OpenRun(d, run_id, started, owner, None, None, None, d.job.name))
        takes.append(Take(d.job.name, owner, d.job.lock_ttl, epoch_ms(d.slot), claims.running_json(d, run_id, started)))
    try:
        for d in herd:
            claims.release_leftover(d.job.name)
        sent = claims.clock.monotonic()
        answers = locks.acquire_many(claims.scripts, takes)
    except redis.RedisError as exc:
        for d in herd:
            metrics.JOB_RUNS.labels(d.job.name, Outcome.SKIPPED_UNAVAILABLE.value).inc()
            claims.slot_not_run(d, Outcome.SKIPPED_UNAVAILABLE, f"Redis unavailable: {exc}")
        return [Attempt(None, Outcome.SKIPPED_UNAVAILABLE, error=str(exc), unavailable="redis") for _ in herd]
    result: list[OpenRun | Attempt | None] = []
    held: list[int] = []
    for i, (run, (claim, pttl)) in enumerate(zip(runs, answers, strict=True)):
        d = run.dispatch
        if claim is Claim.LOCKED and claims.until(d.start) > 0:
            result.append(None)  # claimed ahead while the run before it still holds the job: on the instant
        elif claim is not Claim.OK:
            result.append(claims.not_taken(d, claim, pttl))
        else:
            run.sent, run.start = sent, claims.start_of(d)
            result.append(run)
            held.append(i)
    if held and claims.ledger is not None:
        _open(claims, [runs[i] for i in held], held, result)
    return result


def _open(claims: Claims, runs: list[OpenRun], where: list[int], result: list[OpenRun | Attempt | None]) -> None:
    """Open ``runs`` in the ledger in one statement; ``result[where[k]]`` becomes ``runs[k]``'s answer."""
    assert claims.ledger is not None
    openings = [Opening(r.dispatch.job.name, r.dispatch.slot, r.run_id, r.owner, claims.worker_id, r.started,
                        r.start, claims.spec_versions.get(r.dispatch.job.name)) for r in runs]
    try:
        started = open_runs(claims.ledger.pool, openings)
    except Exception as exc:  # noqa: BLE001 - PostgreSQL down: no fence for any, so none runs
        for i, run in zip(where, runs, strict=True):
            result[i] = claims.not_opened(run, exc)
        return
    for i, run, answer in zip(where, runs, started, strict=True):
        result[i] = claims.opened(run, answer)
