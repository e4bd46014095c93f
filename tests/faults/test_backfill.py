"""Backfills against three replicas while live slots fire: two identical backfills started at once, every slot's
effect committed once, what ran equals the plan, live slots not skipped, and ``appliance audit`` clean."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests.faults.conftest import JOB
from tests.services import wait_until
from tests.worker.harness import REPO

pytestmark = [pytest.mark.process]


def _slot(entry: dict) -> datetime:
    return datetime.fromisoformat(entry["slot"].replace("Z", "+00:00"))


def test_two_identical_backfills_on_three_replicas_commit_each_slot_once(cluster):
    cluster.schedule = "1s"
    cluster.lock_ttl = 1.0
    cluster.start_together({}, {}, {})
    cluster.wait_mark("committed", 2)
    env = cluster.env()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance", *args], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=90)

    # A gap in the past: slots held back by a pause (recorded paused, never run).
    assert cli("jobs", "pause", JOB, "--reason", "make a gap").returncode == 0
    gap = wait_until(lambda: (rows := cluster.sql("SELECT slot FROM job_slots WHERE job = %s AND outcome = 'paused' "
                                                  "ORDER BY slot", (JOB,))) and len(rows) >= 4 and rows, 15, "a gap")
    assert cli("jobs", "resume", JOB).returncode == 0
    since, until = gap[0][0] - timedelta(seconds=3), gap[-1][0] + timedelta(seconds=2)
    wait_until(lambda: datetime.now(UTC) > until + timedelta(seconds=3.5), 10, "the window out of the live horizon")
    window = ["--from", since.isoformat(), "--to", until.isoformat(), "--only", "all", "--max-parallel", "2"]
    plan = json.loads(cli("backfill", JOB, *window, "--dry-run", "--json").stdout)["plan"]
    planned = {_slot(s) for s in plan["will_run"]}
    assert planned >= {slot for (slot,) in gap}
    live_before = len(cluster.sql("SELECT 1 FROM job_slots WHERE job = %s AND outcome = 'success'", (JOB,)))

    both = [subprocess.Popen([sys.executable, "-m", "appliance", "backfill", JOB, *window, "--json"], env=env,
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=90)[0]) for p in both]
    assert [p.returncode for p in both] == [0, 0], [p.stderr for p in both]
    # Each plans when its process gets there: on a loaded machine one may plan after the other's first runs
    # committed, and then says so (will not run: already committed) instead of planning them again.
    sizes = []
    for result in results:
        will_run = {_slot(s) for s in result["plan"]["will_run"]}
        committed = {_slot(s) for s in result["plan"]["will_not_run"] if s["why"].startswith("already committed")}
        assert will_run <= planned and planned <= will_run | committed, result["plan"]
        assert result["progress"]["complete"] and result["progress"]["total"] == len(will_run)
        sizes.append(len(will_run))
    # Each slot of the plan ran (committed) once, by one of the two backfills; the other found it committed.
    effects = Counter(slot for slot, *_ in cluster.effects())
    assert [s for s, n in effects.items() if n > 1] == [], "a slot's effect committed twice"
    assert {s for s in planned if effects[s] == 1} == planned
    states = cluster.sql("SELECT backfill_id, state, count(*) FROM backfill_slots GROUP BY 1, 2")
    ran = sum(n for _, state, n in states if state == "done")
    found_done = sum(n for _, state, n in states if state == "committed")
    assert ran == len(planned) and found_done == sum(sizes) - len(planned), states
    runs = cluster.sql("SELECT slot, trigger, worker FROM job_runs WHERE trigger = 'backfill' "
                       "AND committed_at IS NOT NULL")
    assert sorted(slot for slot, _, _ in runs) == sorted(planned)
    assert len({worker for _, _, worker in runs}) >= 1
    # The live slots kept running meanwhile (they wait for a backfill run, never skipped for it).
    wait_until(lambda: len(cluster.sql("SELECT 1 FROM job_slots WHERE job = %s AND outcome = 'success'", (JOB,)))
               > live_before + len(planned) + 2, 15, "live slots after the backfills")
    skipped = cluster.sql("SELECT slot, reason FROM job_slots WHERE job = %s AND outcome = 'skipped_locked' "
                          "AND slot > %s", (JOB, until))
    assert skipped == [], skipped
    cluster.stop_all()
    cluster.assert_audit_clean(since="5m")
