"""Runs of one instant: a run that ended waits for the others of its instant to start, never longer than its
bound, and never for another instant's runs."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from appliance.worker.together import StartTogether

T = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 1, 10, 1, tzinfo=UTC)


def test_settle_returns_when_the_last_run_of_the_instant_starts():
    together = StartTogether()
    for _ in range(3):
        together.claimed(T)
    together.claimed(LATER)
    together.started(T)
    together.started(T)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (together.settle(T, timeout=30), done.set()))
    waiter.start()
    assert not done.wait(0.2), "one run of the instant has not started yet"
    together.started(T)
    assert done.wait(5), "the last start releases it; the other instant's run does not matter"
    waiter.join()


def test_settle_never_waits_past_its_bound():
    together = StartTogether()
    together.claimed(T)
    t0 = time.monotonic()
    together.settle(T, timeout=0.05)
    assert time.monotonic() - t0 < 5
    together.started(T)
    together.settle(T, timeout=30)  # nothing left: returns at once
