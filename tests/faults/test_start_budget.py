"""``MAX_STARTS_PER_SECOND`` with real workers, redis-server and PostgreSQL: sixty jobs due on one instant, three
workers. Each run that holds its lease takes a start tick of 1/N s in Redis and starts its body then
(``appliance.kernel.protocol.starts``), so the burst is spread over the budget and each slot still runs once."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from appliance.kernel.schedule.model import parse_schedule
from tests.services import wait_until

JOBS = tuple(f"burst{i:02d}" for i in range(60))
RATE = 20
#: PostgreSQL stamps the jobs' first lines, the worker's clock the planned starts: one clock (one machine), but
#: each rounded to the microsecond.
CLOCK_ROUNDING = timedelta(milliseconds=1)


def _most_in_one_second(times: list[datetime]) -> int:
    """The most of ``times`` in any one second (a sliding window, not only whole seconds)."""
    ordered = sorted(times)
    return max(sum(1 for t in ordered[i:] if t - start < timedelta(seconds=1)) for i, start in enumerate(ordered))


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(180)
def test_sixty_jobs_due_together_start_within_the_budget_each_slot_once_on_three_workers(cluster):
    """60 jobs on ``10s`` (:00, :10 ...), three workers, MAX_STARTS_PER_SECOND=20. For the first instant all three
    workers reached: every job's slot has one ``success`` row, one run that started its body and one effect; the
    start ticks recorded (``job_runs.planned_start``) are distinct, none before the instant, at most 20 in any
    whole second; each job's first line (its ``started`` mark, PostgreSQL's clock) comes at or after its tick, so
    by any time t after the instant no more than 20 per second have started (``i``-th start at least
    i/20 s after the instant: a load that delays starts only moves them later). The audit holds."""
    cluster.names = JOBS
    cluster.schedule = "10s"
    cluster.lock_ttl = 2.0
    env = {"MAX_STARTS_PER_SECOND": str(RATE)}
    cluster.start_together(env, env, env)
    # Every worker has planned its slots by its "worker started" line: all three reach the next instant.
    instant = parse_schedule(cluster.schedule).next_after(datetime.now(UTC))
    wait_until(lambda: cluster.sql("SELECT count(*) FROM job_slots WHERE slot = %s AND outcome = 'success'",
                                   (instant,))[0][0] == len(JOBS), 90, "every job's slot of the instant")
    cluster.stop_all()

    assert sorted(cluster.sql("SELECT job, outcome FROM job_slots WHERE slot = %s", (instant,))) == [
        (name, "success") for name in JOBS]
    assert sorted(cluster.sql("SELECT job, count(*) FROM fault_effects WHERE slot = %s GROUP BY job",
                              (instant,))) == [(name, 1) for name in JOBS]
    starts = cluster.sql("SELECT r.job, r.planned_start, m.at, r.worker FROM fault_marks m JOIN job_runs r ON "
                         "r.run_id = m.run_id WHERE m.step = 'started' AND m.slot = %s", (instant,))
    assert sorted(s[0] for s in starts) == list(JOBS), starts  # one body started per slot

    planned = [s[1] for s in starts]
    per_second = Counter(math.floor(p.timestamp()) for p in planned)
    assert len(set(planned)) == len(JOBS) and min(planned) >= instant, sorted(planned)
    assert max(per_second.values()) <= RATE, per_second
    assert all(at >= tick - CLOCK_ROUNDING for _job, tick, at, _w in starts), [s for s in starts if s[2] < s[1]]
    actual = sorted(s[2] for s in starts)
    early = [(i, at) for i, at in enumerate(actual) if at < instant + timedelta(seconds=i / RATE) - CLOCK_ROUNDING]
    assert not early, early
    workers = Counter(s[3] for s in starts)
    print(f"\n{len(JOBS)} starts on {len(workers)} workers; by planned start at most {max(per_second.values())} in "
          f"one second, {_most_in_one_second(planned)} in any second; first lines at most "
          f"{_most_in_one_second(actual)} in any second; last first line "
          f"{(actual[-1] - instant).total_seconds():.2f} s after the instant")
    cluster.assert_audit_clean_through(instant, grace=10)


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(180)
def test_sixty_catch_ups_after_downtime_start_within_the_budget(cluster):
    """The same 60 jobs and three workers run an instant, stop across the next one and come back within its
    grace: each job catches that slot up at once (``appliance.worker.catch_up``), 60 late runs due together.
    Their planned start is in the past; the budget gives each a tick no earlier than its claim, so they too
    start at most 20 a second from when they were claimed, each slot once."""
    cluster.names = JOBS
    cluster.schedule = "10s"
    cluster.lock_ttl = 2.0
    env = {"MAX_STARTS_PER_SECOND": str(RATE)}
    cluster.start_together(env, env, env)
    instant = parse_schedule(cluster.schedule).next_after(datetime.now(UTC))
    wait_until(lambda: cluster.sql("SELECT count(*) FROM job_slots WHERE slot = %s AND outcome = 'success'",
                                   (instant,))[0][0] == len(JOBS), 90, "every job's slot of the instant")
    cluster.stop_all()
    late = instant + timedelta(seconds=10)
    wait_until(lambda: datetime.now(UTC) > late, 20, "the slot missed while down", interval=0.2)
    cluster.workers.clear()
    cluster.start_together(env, env, env)
    wait_until(lambda: cluster.sql("SELECT count(*) FROM job_slots WHERE slot = %s", (late,))[0][0] == len(JOBS),
               90, "every job's row of the missed slot")
    cluster.stop_all()

    assert sorted(cluster.sql("SELECT job, outcome FROM job_slots WHERE slot = %s", (late,))) == [
        (name, "success") for name in JOBS]
    assert sorted(cluster.sql("SELECT job, count(*) FROM fault_effects WHERE slot = %s GROUP BY job",
                              (late,))) == [(name, 1) for name in JOBS]
    starts = cluster.sql("SELECT r.job, r.planned_start, m.at, r.started_at FROM fault_marks m JOIN job_runs r ON "
                         "r.run_id = m.run_id WHERE m.step = 'started' AND m.slot = %s", (late,))
    assert sorted(s[0] for s in starts) == list(JOBS), starts
    given = [s[1] for s in starts]
    actual = sorted(s[2] for s in starts)
    print(f"\n{len(JOBS)} catch-ups; first lines at most {_most_in_one_second(actual)} in any second, from "
          f"{(actual[0] - late).total_seconds():.2f} to {(actual[-1] - late).total_seconds():.2f} s after the slot")
    assert len(set(given)) == len(JOBS), sorted(given)
    assert max(Counter(math.floor(g.timestamp()) for g in given).values()) <= RATE, sorted(given)
    # A tick before its claim would start at once: 60 late runs given ticks of their past instant start together.
    in_the_past = [(job, tick, claimed) for job, tick, _at, claimed in starts if tick < claimed - CLOCK_ROUNDING]
    assert not in_the_past, in_the_past
    first = min(given)
    early = [(i, at) for i, at in enumerate(actual) if at < first + timedelta(seconds=i / RATE) - CLOCK_ROUNDING]
    assert not early, early
    cluster.assert_audit_clean_through(late, grace=10)
