"""MAX_STARTS_PER_SECOND (``appliance.kernel.protocol.starts``) on a real redis-server: 60 runs due on one instant
(60 jobs on ``0 * * * *``) take 60 different start ticks, within the budget, however many workers ask."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from appliance.kernel.protocol.starts import StartBudget


def test_sixty_starts_due_on_one_instant_are_spread_within_the_budget(redis_server):
    instant = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
    claimed = instant - timedelta(milliseconds=50)  # ahead of the instant, as a slot is claimed
    budgets = [StartBudget(redis_server.client(), 10.0) for _ in range(3)]  # three workers
    with ThreadPoolExecutor(12) as pool:
        starts = list(pool.map(lambda i: budgets[i % 3].reserve(instant, claimed), range(60)))
    assert len(set(starts)) == 60
    offsets = sorted((s - instant).total_seconds() for s in starts)
    assert offsets[0] == 0.0 and abs(offsets[-1] - 5.9) < 1e-6
    per_second = Counter(int(o) for o in offsets)
    assert max(per_second.values()) == 10 and len(per_second) == 6


def test_a_start_never_comes_before_its_planned_instant(redis_server):
    budget = StartBudget(redis_server.client(), 4.0)
    planned = datetime(2026, 12, 6, 13, 0, 0, 130_000, tzinfo=UTC)
    claimed = planned - timedelta(seconds=1)
    first, second = budget.reserve(planned, claimed), budget.reserve(planned, claimed)
    assert first >= planned and (first - planned).total_seconds() < 0.25
    assert (second - first).total_seconds() == 0.25


def test_a_late_run_is_given_a_start_from_its_claim_not_from_its_past_instant(redis_server):
    """60 catch-ups of an instant 5 s ago (a restart, an outage): ticks of the past would start them all at once."""
    budget = StartBudget(redis_server.client(), 10.0)
    instant = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
    now = instant + timedelta(seconds=5, milliseconds=20)
    offsets = sorted((budget.reserve(instant, now) - now).total_seconds() for _ in range(60))
    assert 0 <= offsets[0] < 0.1 and abs(offsets[-1] - offsets[0] - 5.9) < 1e-6
