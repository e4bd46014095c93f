"""Chaos in CI: ``tests.faults.chaos.Chaos`` (every fault class: kill -9, SIGSTOP past the lease, Redis restarted
with and without its data, PostgreSQL crashed, a worker's Redis or PostgreSQL link partitioned, a worker's clock
skewed, the disk full) for ``SOAK_SECONDS`` (default 120) against three workers; then the history is checked,
never the timeline: ``appliance audit`` finds no violation, and every effect in the probe job's table is its
slot's only one and the one the ledger names. ``scripts/chaos --minutes N`` is the long version.
``SOAK_SEED`` replays a run (the seed is printed)."""

from __future__ import annotations

import os
import time

import pytest

from tests.faults.chaos import Chaos
from tests.services import short_tmpdir

pytestmark = [pytest.mark.process, pytest.mark.long, pytest.mark.timeout(420)]

SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))


def test_chaos_of_every_fault_class_leaves_a_history_the_audit_finds_clean():
    seed = int(os.environ.get("SOAK_SEED", time.time_ns() % 100_000))
    chaos = Chaos(short_tmpdir("soak-"), seed)
    try:
        chaos.run(SECONDS, log=print)
        report = chaos.check()
    finally:
        chaos.close()
    print(report.summary())
    assert report.ok, report.summary()
    assert report.left_out == {} or os.environ.get("CI") != "true", report.left_out
    outcomes = report.audit["jobs"]["effect"]["outcomes"]
    assert outcomes.get("success", 0) >= SECONDS / 4, outcomes
    assert len(report.faults) >= min(5, len(Chaos.KINDS)), report.faults
