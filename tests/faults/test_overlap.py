"""Overlap policies (``OVERLAP_<JOB>``) with real workers, redis-server and PostgreSQL: a 1 s job whose runs take
longer than its period (``tests.faults.jobs:steady``, which keeps its checkpoints), on one worker and on three.
Every slot ends with one row that says what happened, and ``appliance audit`` holds."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.services import wait_until


def _rows(cluster) -> list[tuple]:
    return cluster.sql("SELECT slot, outcome, reason FROM job_slots WHERE job = 'effect' ORDER BY slot")


def _runs(cluster) -> list[tuple]:
    return cluster.sql("SELECT slot, outcome, started_at, finished_at, coalesce(reason, error) FROM job_runs "
                       "WHERE job = 'effect' "
                       "ORDER BY started_at")


def _steady(cluster, tmp_path) -> dict[str, str]:
    cluster.callable = "tests.faults.jobs:steady"
    cluster.schedule = "1s"
    cluster.lock_ttl = 5.0
    return {"FAULT_TRACE": str(tmp_path / "trace")}


@pytest.mark.process
@pytest.mark.timeout(90)
def test_skip_records_skipped_overlap(cluster, tmp_path):
    env = _steady(cluster, tmp_path)
    cluster.start(FAULT_WORK="2.5", **env)
    wait_until(lambda: len([r for r in _rows(cluster) if r[1] == "success"]) >= 2, 30, "two runs")
    cluster.stop_all()
    skipped = [r for r in _rows(cluster) if r[1] == "skipped_overlap"]
    assert len(skipped) >= 2 and all("overlap = skip" in r[2] for r in skipped), _rows(cluster)
    assert not [r for r in _rows(cluster) if r[1] == "skipped_locked"]
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(120)
def test_buffer_one_starts_the_next_slot_when_the_run_ends_on_three_workers(cluster, tmp_path):
    """Runs of 2.5 s every second: the slot that comes while one runs waits and starts as the run ends (on
    whichever replica), one more is skipped because one is buffered already; every slot has its row."""
    env = _steady(cluster, tmp_path)
    cluster.start_together(*[{"FAULT_WORK": "2.5", "OVERLAP_EFFECT": "buffer_one", **env}] * 3)
    wait_until(lambda: len([r for r in _rows(cluster) if r[1] == "success"]) >= 4, 40, "four runs")
    cluster.stop_all()
    runs = [r for r in _runs(cluster) if r[1] == "success"]
    gaps = [(b[2] - a[3]).total_seconds() for a, b in itertools.pairwise(runs)]
    # Each buffered slot started as the run before it ended: within the remote poll (0.2 s) and a claim.
    assert gaps and max(gaps) < 0.6, gaps
    skipped = [r for r in _rows(cluster) if r[1] == "skipped_overlap"]
    assert skipped and all("buffer" in r[2] for r in skipped), _rows(cluster)
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.timeout(90)
def test_cancel_other_stops_the_running_run_for_the_newer_slot(cluster, tmp_path):
    env = _steady(cluster, tmp_path)
    cluster.start_together(*[{"FAULT_WORK": "2.5", "OVERLAP_EFFECT": "cancel_other", **env}] * 2)
    wait_until(lambda: len([r for r in _rows(cluster) if r[1] == "cancelled_by_newer"]) >= 2, 30, "cancelled runs")
    cluster.stop_all()
    cancelled = [r for r in _runs(cluster) if r[1] == "cancelled_by_newer"]
    assert all("overlap = cancel_other" in (r[4] or "") for r in cancelled), cancelled
    rows = _rows(cluster)
    assert {r[1] for r in rows} <= {"cancelled_by_newer", "skipped_overlap", "success", "cancelled"}, rows
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.timeout(90)
def test_timeout_stops_the_run_at_a_checkpoint(cluster, tmp_path):
    env = _steady(cluster, tmp_path)
    cluster.schedule = "3s"
    cluster.start(FAULT_WORK="2.5", TIMEOUT_EFFECT="1s", **env)
    wait_until(lambda: [r for r in _rows(cluster) if r[1] == "timed_out"], 20, "a timed-out slot")
    cluster.stop_all()
    (run, *_) = [r for r in _runs(cluster) if r[1] == "timed_out"]
    assert 0.9 < (run[3] - run[2]).total_seconds() < 2.0, run
    assert cluster.effects() == []
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.timeout(90)
def test_process_isolation_ends_a_run_that_ignores_its_checkpoints(cluster):
    """``effect`` sleeps without a checkpoint: under isolation = process its child is killed SHUTDOWN_TIMEOUT
    after the timeout, the run is recorded timed_out, and the next slot runs."""
    cluster.schedule = "4s"
    cluster.lock_ttl = 10.0
    cluster.start(FAULT_WORK="30", TIMEOUT_EFFECT="1s", ISOLATION_EFFECT="process", SHUTDOWN_TIMEOUT="1")
    wait_until(lambda: len([r for r in _rows(cluster) if r[1] == "timed_out"]) >= 2, 30, "two timed-out slots")
    cluster.stop_all()
    runs = [r for r in _runs(cluster) if r[1] == "timed_out"]
    assert all((r[3] - r[2]).total_seconds() < 3.0 for r in runs), runs
    assert cluster.effects() == [] and not cluster.marks("committed")
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.timeout(90)
def test_jitter_is_the_same_on_every_replica_and_recorded(cluster):
    from appliance.kernel.schedule.jitter import jitter_offset

    cluster.schedule = "5s"
    cluster.start_together({"JITTER_EFFECT": "3s"}, {"JITTER_EFFECT": "3s"})
    wait_until(lambda: len(cluster.sql("SELECT 1 FROM job_runs WHERE outcome = 'success'")) >= 3, 30, "runs")
    cluster.stop_all()
    rows = cluster.sql("SELECT slot, planned_start, started_at FROM job_runs WHERE outcome = 'success'")
    for slot, planned, _started in rows:
        assert abs((planned - slot).total_seconds() - jitter_offset("effect", slot, 3.0)) < 0.002, (slot, planned)
    started = cluster.sql("SELECT m.slot, min(m.at), min(r.planned_start) FROM fault_marks m JOIN job_runs r "
                          "ON r.run_id = m.run_id WHERE m.step = 'started' GROUP BY m.slot")
    assert all(0 <= (at - planned).total_seconds() < 0.5 for _s, at, planned in started), started
    assert len({s for s, *_ in rows}) == len(rows)
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.timeout(90)
def test_a_blackout_records_skipped_calendar_with_its_name(cluster):
    cluster.schedule = "1s"
    cluster.start(BLACKOUT_EFFECT="00:00-23:59")
    wait_until(lambda: len([r for r in _rows(cluster) if r[1] == "skipped_calendar"]) >= 3, 20, "excluded slots")
    cluster.stop_all()
    rows = [r for r in _rows(cluster) if r[1] == "skipped_calendar"]
    assert all(r[2] == "calendar blackout: blackout 00:00-23:59" for r in rows), rows
    assert cluster.effects() == []
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.timeout(90)
def test_allow_runs_slots_side_by_side_each_once_on_three_workers(cluster, tmp_path):
    """Runs of 2.5 s every second with overlap = allow, max_concurrent = 2: two slots run at once, each under a
    lease (lock:effect:<slot>) and fence of its own; a third finds two running and is skipped; every slot
    commits at most once and the audit holds."""
    env = _steady(cluster, tmp_path)
    cluster.start_together(*[{"FAULT_WORK": "2.5", "OVERLAP_EFFECT": "allow", "MAX_CONCURRENT_EFFECT": "2",
                              **env}] * 3)
    wait_until(lambda: len([r for r in _rows(cluster) if r[1] == "success"]) >= 4, 40, "four runs")
    cluster.stop_all()
    runs = [r for r in _runs(cluster) if r[1] == "success"]
    overlapping = [(a, b) for a, b in itertools.pairwise(runs) if b[2] < a[3]]
    assert overlapping, runs
    effects = cluster.effects()
    assert len({e[0] for e in effects}) == len(effects), effects
    rows = _rows(cluster)
    assert [r for r in rows if r[1] == "skipped_overlap" and "max_concurrent" in r[2]], rows
    cluster.assert_audit_clean()


@pytest.mark.process
@pytest.mark.timeout(90)
def test_allow_takes_a_dead_holders_slot_over_after_its_ttl_with_one_effect(cluster):
    """overlap = allow, max_concurrent = 2, three workers: the worker that took the first slot is killed -9 in it,
    before its commit. Its slot's own lease (lock:effect:<slot>) expires after the TTL; a worker that found the
    slot running watched that lease and runs the slot, once, under a newer fence of that slot; the dead run is
    closed; every slot ends with at most one effect and the audit holds."""
    cluster.schedule = "3s"
    cluster.lock_ttl = 3.0
    env = {"FAULT_BLOCK": "first_run", "OVERLAP_EFFECT": "allow", "MAX_CONCURRENT_EFFECT": "2"}
    cluster.start_together(env, env, env)
    slot, dead_run, pid = cluster.wait_mark("started")[0]
    victim = next(w for w in cluster.workers if w.pid == pid)
    victim.kill()
    killed = time.monotonic()
    (effect,) = wait_until(lambda: cluster.effects(slot), 20, "the takeover's effect")
    took = time.monotonic() - killed
    # Not before the dead holder's lease expired (at most one TTL after its last renewal), well within grace.
    assert 0.5 < took < cluster.lock_ttl + 3.0, took
    assert effect[1] != dead_run and effect[3] != pid
    wait_until(lambda: cluster.run_row(dead_run)[0] != "running", 15, "the dead holder's run closed")
    assert cluster.run_row(dead_run)[0] in ("abandoned", "lease_lost"), cluster.run_row(dead_run)
    later = cluster.sql("SELECT count(*) FROM job_slots WHERE job = 'effect' AND slot > %s AND outcome = 'success'",
                        (slot,))[0][0]
    wait_until(lambda: cluster.sql("SELECT count(*) FROM job_slots WHERE job = 'effect' AND slot > %s AND "
                                   "outcome = 'success'", (slot,))[0][0] >= max(later, 2), 20, "later slots")
    cluster.stop_all()
    assert cluster.slot_row(slot)[:2] == ("success", effect[1])
    fences = cluster.sql("SELECT fence FROM job_runs WHERE run_id IN (%s, %s) ORDER BY started_at",
                         (dead_run, effect[1]))
    assert fences[0][0] < fences[1][0], fences
    effects = cluster.effects()
    assert len({e[0] for e in effects}) == len(effects), effects
    cluster.assert_audit_clean()


def _slots_from(cluster, first: datetime, last: datetime) -> list[tuple]:
    return cluster.sql("SELECT slot, outcome, reason FROM job_slots WHERE job = 'effect' AND slot BETWEEN %s AND %s "
                       "ORDER BY slot", (first, last))


def _bodies(trace: Path) -> dict[str, tuple[datetime, float, float]]:
    """Run id -> (slot, start, stop) of its job body, from ``steady``'s trace (one clock: every worker runs on this
    host)."""
    found: dict[str, dict[str, float]] = {}
    slots: dict[str, datetime] = {}
    for line in trace.read_text().splitlines():
        slot, run_id, _pid, event, at = line.split()
        slots[run_id] = datetime.fromisoformat(slot)
        if event in ("start", "stop"):
            found.setdefault(run_id, {})[event] = float(at)
    return {run_id: (slots[run_id], events["start"], events.get("stop", float("inf")))
            for run_id, events in found.items()}


def _run_of(cluster, slot: datetime) -> tuple:
    """(run id, worker) of the slot's success."""
    rows = cluster.sql("SELECT run_id, worker FROM job_runs WHERE job = 'effect' AND slot = %s AND "
                       "outcome = 'success'", (slot,))
    assert len(rows) == 1, (slot, cluster.slot_row(slot))
    return rows[0]


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(150)
def test_buffer_all_runs_each_slot_that_found_the_job_running_in_order_once_on_three_workers(cluster, tmp_path):
    """A 1 s job whose first run takes 3 s and the others 0.3 s, overlap = buffer_all, three workers: the slots
    that come while the first run goes are queued (on every worker) and run one after the other, in slot order,
    each once, from when the first run ends; the backlog drains and later slots run on time. Every slot from
    the first on is a success with one effect, no two runs overlap, and the audit accounts for the buffered
    slots (one success row each)."""
    env = _steady(cluster, tmp_path)
    cluster.lock_ttl = 3.0
    grace = 10.0
    cluster.start_together(*[{"FAULT_FIRST_WORK": "3", "FAULT_WORK": "0.3", "OVERLAP_EFFECT": "buffer_all",
                              "GRACE_EFFECT": f"{grace:g}s", **env}] * 3)
    (s0,), = wait_until(lambda: cluster.sql(
        "SELECT slot FROM job_runs WHERE job = 'effect' AND finished_at IS NOT NULL ORDER BY started_at LIMIT 1"),
        40, "the first run's end")
    last = s0 + timedelta(seconds=8)
    wait_until(lambda: cluster.slot_row(last), 40, f"slot {last.isoformat()}")
    cluster.stop_all()

    rows = _slots_from(cluster, s0, last)
    assert [r[0] for r in rows] == [s0 + timedelta(seconds=i) for i in range(9)], rows
    assert {r[1] for r in rows} == {"success"}, rows
    bodies = _bodies(tmp_path / "trace")
    started = Counter(slot for slot, *_ in bodies.values() if s0 <= slot <= last)
    assert set(started.values()) == {1}, started  # no slot's body started twice, not even without a commit
    # (slot, body start, body stop, worker) of each slot's run, in slot order
    runs = [(slot, *bodies[run_id][1:], worker) for slot, run_id, worker in
            ((slot, *_run_of(cluster, slot)) for slot, *_ in rows)]
    queued = [r for r in runs[1:] if r[0].timestamp() < runs[0][2]]
    assert len(queued) >= 2, runs  # the first slot's 3 s of work: the next two at least came while it ran
    gaps = [b[1] - a[2] for a, b in itertools.pairwise(runs)]
    assert min(gaps) >= 0, runs  # each started after the one before it ended: in slot order, one at a time
    assert sorted(cluster.sql("SELECT slot, count(*) FROM fault_effects WHERE slot BETWEEN %s AND %s GROUP BY slot",
                              (s0, last))) == [(r[0], 1) for r in rows]
    chain = gaps[: len(queued)]
    print(f"\n{len(queued)} slots queued behind the first run; slots run on {len({r[3] for r in runs})} workers; "
          f"each queued one started {min(chain):.3f}-{max(chain):.3f} s after the run before it ended")
    report = cluster.assert_audit_clean_through(last, grace)
    job = report["jobs"]["effect"]
    assert job["expected"] == job["recorded"] and job["outcomes"].get("success", 0) >= len(rows), job


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(150)
def test_a_catch_up_running_into_the_next_slot_makes_it_start_when_it_ends_under_buffer_one(cluster, tmp_path):
    """The issue's wart: a catch-up that started just before the next slot made that slot ``skipped_locked``.
    A 10 s job (``steady``, runs of 0.2 s) runs a slot on one worker, which then stops; three workers with
    overlap = buffer_one start 8 s before the next slot but one, so the slot in between is caught up as soon as
    they are up (more than the coalescing window, 1 s, before the next slot, unless they take 7 s to start: it
    runs), and this catch-up takes 9 s. The next slot finds it running, on whichever worker, and starts when it
    ends: both slots succeed, with one effect each; no slot is recorded skipped; the audit holds. (The grace,
    15 s, leaves the next slot room to wait on a loaded machine.)"""
    cluster.callable = "tests.faults.jobs:steady"
    cluster.schedule = "10s"
    cluster.lock_ttl = 2.0
    period = timedelta(seconds=10)
    first = cluster.start("home-0", FAULT_WORK="0.2", FAULT_TRACE=str(tmp_path / "trace-0"))
    (s0,), = wait_until(lambda: cluster.sql("SELECT slot FROM job_slots WHERE job = 'effect' AND outcome = 'success'"),
                        30, "the first slot's success")
    first.terminate()
    s1, s2 = s0 + period, s0 + 2 * period
    time.sleep(max(0.0, (s2 - timedelta(seconds=8) - datetime.now(UTC)).total_seconds()))
    # The workers' first run (the catch-up, which finds trace-1 not yet written) takes 9 s, the next ones 0.3 s.
    grace = 15.0
    env = {"FAULT_TRACE": str(tmp_path / "trace-1"), "FAULT_FIRST_WORK": "9", "FAULT_WORK": "0.3",
           "OVERLAP_EFFECT": "buffer_one", "GRACE_EFFECT": f"{grace:g}s"}
    cluster.start_together(env, env, env)
    wait_until(lambda: cluster.slot_row(s2), 40, "the next slot's row")
    cluster.stop_all()

    rows = _slots_from(cluster, s0, s2)
    assert rows == [(s0, "success", None), (s1, "success", None), (s2, "success", None)], rows
    bodies = _bodies(tmp_path / "trace-1")
    (catch_up, catch_up_worker), (nxt, next_worker) = _run_of(cluster, s1), _run_of(cluster, s2)
    _, caught_from, caught_to = bodies[catch_up]
    # What makes this the wart's situation: the catch-up ran (it was not coalesced) and was running at s2.
    assert caught_from < s2.timestamp() < caught_to, (s2, bodies)
    _, next_from, _ = bodies[nxt]
    assert next_from >= caught_to, bodies  # started when the catch-up ended, not beside it nor skipped
    assert sorted(cluster.sql("SELECT slot, count(*) FROM fault_effects WHERE slot BETWEEN %s AND %s GROUP BY slot",
                              (s0, s2))) == [(s0, 1), (s1, 1), (s2, 1)]
    assert Counter(slot for slot, *_ in bodies.values()) == {s1: 1, s2: 1}
    print(f"\ncatch-up started {s2.timestamp() - caught_from:.3f} s before the next slot ({catch_up_worker}); the "
          f"next slot started {next_from - caught_to:.3f} s after it ended ({next_worker})")
    cluster.assert_audit_clean_through(s2, grace)


@pytest.mark.process
@pytest.mark.long
@pytest.mark.timeout(150)
def test_a_catch_up_started_within_a_second_of_the_next_slot_makes_it_wait_under_buffer_one(cluster, tmp_path):
    """The wart at its own scale: a 1 s job, whose workers come back at some fraction of a second, so the slot
    they catch up starts that fraction before the next one (the issue measured 71 ms). One worker runs slots
    of 0.2 s and stops; three workers with overlap = buffer_one start at once; their first run, the catch-up,
    takes 2 s. The next slot starts when it ends (success, not skipped), each slot has one effect at most,
    every slot its row, and the audit holds."""
    cluster.callable = "tests.faults.jobs:steady"
    cluster.schedule = "1s"
    cluster.lock_ttl = 2.0
    first = cluster.start("home-0", FAULT_WORK="0.2", FAULT_TRACE=str(tmp_path / "trace-0"))
    wait_until(lambda: len(cluster.sql("SELECT 1 FROM job_slots WHERE job = 'effect' AND outcome = 'success'")) >= 2,
               30, "two slots' success")
    first.terminate()
    grace = 5.0
    env = {"FAULT_TRACE": str(tmp_path / "trace-1"), "FAULT_FIRST_WORK": "2", "FAULT_WORK": "0.2",
           "OVERLAP_EFFECT": "buffer_one", "GRACE_EFFECT": f"{grace:g}s"}
    cluster.start_together(env, env, env)
    caught = wait_until(lambda: (t := tmp_path / "trace-1").exists() and _bodies(t), 30, "the catch-up's start")
    (catch_up, (slot, caught_from, _)), = list(caught.items())[:1]
    nxt = slot + timedelta(seconds=1)
    wait_until(lambda: (row := cluster.slot_row(nxt + timedelta(seconds=3))) and row, 30, "the slots after it")
    cluster.stop_all()

    bodies = _bodies(tmp_path / "trace-1")
    assert cluster.slot_row(slot)[:2] == ("success", catch_up), cluster.slot_row(slot)
    caught_to = bodies[catch_up][2]
    assert caught_from < nxt.timestamp() < caught_to, (nxt, bodies[catch_up])
    next_run, _ = _run_of(cluster, nxt)
    assert bodies[next_run][1] >= caught_to, (bodies[catch_up], bodies[next_run])
    effects = cluster.sql("SELECT slot, count(*) FROM fault_effects GROUP BY slot HAVING count(*) > 1")
    assert effects == [], effects
    assert not [r for r in _rows(cluster) if r[1] == "skipped_locked"], _rows(cluster)
    print(f"\ncatch-up started {nxt.timestamp() - caught_from:.3f} s before the next slot; the next slot started "
          f"{bodies[next_run][1] - caught_to:.3f} s after it ended")
    cluster.assert_audit_clean_through(nxt + timedelta(seconds=3), grace)
