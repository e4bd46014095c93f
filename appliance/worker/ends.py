"""The ends of runs, recorded in flights: a run's end in the ledger (``appliance_finish_run``) and in Redis
(``FINISH``: the release, the slot's done marker, the history and counters) each go out with whatever other ends
are waiting at that moment (``appliance.worker.batches``), as one statement and one round trip.

A run alone still costs one statement and one round trip; the runs of a herd, ending within milliseconds of
one another, cost a few of each per instant instead of one each.
"""

from __future__ import annotations

from appliance.kernel.protocol import locks
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.protocol.ledger_batches import Ending, finish_runs
from appliance.kernel.protocol.locks import End
from appliance.kernel.protocol.outcomes import Outcome
from appliance.worker.batches import GroupCommit


class RunEnds:
    def __init__(self, ledger: Ledger | None, scripts: locks.Scripts, history_limit: int):
        self._ledger = ledger
        self._scripts = scripts
        self._history_limit = history_limit
        self.ledger: GroupCommit[Ending, Outcome] = GroupCommit(self._finish_runs)
        #: A run's end in Redis: (whether the lease was still ours, the failure streak a success ended, whether
        #: the job's "failing often" warning is on), as ``locks.finish`` answers.
        self.redis: GroupCommit[End, tuple[bool, int, bool]] = GroupCommit(self._finish_many)

    def _finish_runs(self, endings: list[Ending]) -> list[Outcome]:
        assert self._ledger is not None
        return finish_runs(self._ledger.pool, endings)

    def _finish_many(self, ends: list[End]) -> list[tuple[bool, int, bool]]:
        return locks.finish_many(self._scripts, ends, self._history_limit)
