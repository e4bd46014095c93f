"""Calendars with a real worker, redis-server and PostgreSQL: an RFC 5545 file (written here with ``icalendar``)
whose recurring event covers the first slots of a 1 s job; those slots end ``skipped_calendar`` naming the
calendar and the event, the ones after it run; ``appliance schedule plan`` shows the same exclusions before
they happen; ``appliance audit`` counts the excluded slots, holds, and fails when a ``skipped_calendar`` row is
missing or says what no calendar says; ``appliance schedule diff`` lists what a calendar added to the spec
removes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from icalendar import Calendar as IcsCalendar
from icalendar import Event

from tests.services import wait_until
from tests.worker.harness import REPO

ZONE = "Asia/Kolkata"
EVENT = "Database maintenance"


def _ics(path: Path, start: datetime, span: timedelta) -> Path:
    """A daily event first seen a week ago at ``start``'s time of day (UTC), lasting ``span``, and a one-off event
    a year later: only today's occurrence of the first covers slots of the test."""
    calendar = IcsCalendar()
    calendar.add("prodid", "-//appliance tests//calendars//EN")
    calendar.add("version", "2.0")
    daily = Event()
    daily.add("uid", "maintenance@appliance.test")
    daily.add("summary", EVENT)
    daily.add("dtstamp", start)
    daily.add("dtstart", start - timedelta(days=7))
    daily.add("dtend", start - timedelta(days=7) + span)
    daily.add("rrule", {"freq": "daily"})
    calendar.add_component(daily)
    later = Event()
    later.add("uid", "later@appliance.test")
    later.add("summary", "Next year's move")
    later.add("dtstamp", start)
    later.add("dtstart", (start + timedelta(days=365)).date())
    calendar.add_component(later)
    path.write_bytes(calendar.to_ical())
    return path


def _jobs_file(tmp: Path, ics: Path) -> Path:
    path = tmp / "calendar-jobs.toml"
    path.write_text(f"""
[calendars.maintenance]
ics = "{ics.name}"

[jobs.effect]
callable = "tests.faults.jobs:effect"
schedule = "1s"
lock_ttl = 1.0
timezone = "{ZONE}"
calendar = ["maintenance"]
""")
    return path


def _appliance(cluster, jobs_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], env={**cluster.env(),
                          "APPLIANCE_JOBS_FILE": str(jobs_file)}, cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _at(report: dict, slot: datetime) -> list[dict]:
    """The report's violations at ``slot``."""
    return [v for v in report["violations"]
            if v["slot"] and datetime.fromisoformat(v["slot"].replace("Z", "+00:00")) == slot]


def _hash(cluster, version: int) -> str:
    return cluster.sql("SELECT hash FROM job_specs WHERE job = 'effect' AND version = %s", (version,))[0][0]


def _rows(cluster) -> dict[datetime, tuple[str, str | None]]:
    return {slot: (outcome, reason) for slot, outcome, reason in
            cluster.sql("SELECT slot, outcome, reason FROM job_slots WHERE job = 'effect'")}


@pytest.mark.process
@pytest.mark.timeout(90)
def test_an_ics_event_excludes_its_slots_and_the_audit_accounts_for_them(cluster, tmp_path):
    """Today's occurrence of the daily event, a minute long, ends at t0 + 4 s: the worker, started before t0,
    skips every slot up to t0 + 3 s and runs those after."""
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    end = t0 + timedelta(seconds=4)
    jobs_file = _jobs_file(tmp_path, _ics(tmp_path / "maintenance.ics", end - timedelta(seconds=60),
                                          timedelta(seconds=60)))
    reason = f"calendar maintenance: calendar event: {EVENT}"

    # Seen before it happens: the plan lists t0 + 2 s and t0 + 3 s as excluded, with the same reason.
    plan = _appliance(cluster, jobs_file, "schedule", "plan", "effect", "--from",
                      (t0 + timedelta(seconds=1)).isoformat(), "--next", "6", "--json")
    assert plan.returncode == 0, plan.stderr
    slots = json.loads(plan.stdout)["slots"]
    assert [(s["slot"], s["runs"]) for s in slots] == [
        (_z(t0 + timedelta(seconds=i)), i >= 4) for i in range(2, 8)]
    assert {(s["calendar"], s["reason"]) for s in slots if not s["runs"]} == {
        ("maintenance", f"calendar event: {EVENT}")}

    cluster.start(APPLIANCE_JOBS_FILE=str(jobs_file))
    assert datetime.now(UTC) < t0, "the worker started before the test's window"
    wait_until(lambda: end + timedelta(seconds=3) in _rows(cluster), 30, "three slots after the event")
    cluster.stop_all()
    rows = _rows(cluster)
    window = sorted(s for s in rows if s < end)
    ran = sorted(s for s in rows if s >= end)
    assert window[-4:] == [t0 + timedelta(seconds=i) for i in range(4)], window
    assert [rows[s] for s in window] == [("skipped_calendar", reason)] * len(window), rows
    assert len(ran) >= 3 and all(rows[s][0] == "success" for s in ran), rows
    effects = {e[0] for e in cluster.effects()}
    assert effects == set(ran)

    jobs_env = {"APPLIANCE_JOBS_FILE": str(jobs_file)}
    report = cluster.assert_audit_clean(env=jobs_env)
    audited = report["jobs"]["effect"]
    assert audited["excluded"] == len(window) == audited["outcomes"]["skipped_calendar"], audited

    # Missing: the checker names the slot and the calendar that excludes it.
    cluster.sql("DELETE FROM job_slots WHERE job = 'effect' AND slot = %s", (window[1],))
    code, report = cluster.audit("--since", "10m", env=jobs_env)
    assert code == 1 and {(v["kind"], v["detail"]) for v in _at(report, window[1])} == {
        ("unrecorded", "no ledger row for this slot (calendar maintenance excludes it: expected a skipped_calendar "
                       "row)")}, report["violations"]

    # Said without a calendar that says it: a slot that ran, recorded skipped_calendar instead.
    cluster.sql("UPDATE job_slots SET outcome = 'skipped_calendar', reason = %s, run_id = NULL "
                "WHERE job = 'effect' AND slot = %s", (reason, ran[0]))
    code, report = cluster.audit("--since", "10m", env=jobs_env)
    kinds = {v["kind"] for v in _at(report, ran[0])}
    assert code == 1 and "calendar" in kinds, report["violations"]


@pytest.mark.process
@pytest.mark.timeout(60)
def test_a_run_committed_on_an_excluded_slot_is_a_calendar_violation(cluster, tmp_path):
    """The same job without its calendar first (spec version 1), then with it (version 2): the runs of version 1
    on slots the calendar excludes are judged under version 1 and hold, and ``appliance schedule diff`` lists the
    fire times version 2 removes; a run of version 2 committed on a slot its calendar excludes (one run moved
    there in the ledger) is what the checker reports."""
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    ics = _ics(tmp_path / "maintenance.ics", t0 - timedelta(seconds=60), timedelta(seconds=600))
    jobs_file = _jobs_file(tmp_path, ics)
    plain = tmp_path / "plain-jobs.toml"
    plain.write_text(jobs_file.read_text().replace('calendar = ["maintenance"]', ""))

    cluster.start(APPLIANCE_JOBS_FILE=str(plain))
    wait_until(lambda: len([r for r in _rows(cluster).values() if r[0] == "success"]) >= 3, 20, "runs of version 1")
    cluster.stop_all()
    cluster.start(APPLIANCE_JOBS_FILE=str(jobs_file))
    wait_until(lambda: len([r for r in _rows(cluster).values() if r[0] == "skipped_calendar"]) >= 3, 20,
               "excluded slots of version 2")
    cluster.stop_all()
    versions = cluster.sql("SELECT version FROM job_specs WHERE job = 'effect' ORDER BY version")
    assert versions == [(1,), (2,)], versions
    jobs_env = {"APPLIANCE_JOBS_FILE": str(jobs_file)}
    cluster.assert_audit_clean(env=jobs_env)

    # `appliance schedule diff`: version 2's calendar removes the fire times inside today's occurrence.
    result = _appliance(cluster, jobs_file, "schedule", "diff", "effect", "--window", "1h", "--json")
    assert result.returncode == 0, result.stderr
    changes = json.loads(result.stdout)
    assert (changes["from"], changes["to"], changes["added"]) == (1, 2, [])
    removed = [datetime.fromisoformat(s["slot"].replace("Z", "+00:00")) for s in changes["removed"]]
    occurrence = (t0 - timedelta(seconds=60), t0 + timedelta(seconds=540))
    assert removed and all(occurrence[0] <= s < occurrence[1] for s in removed), (occurrence, removed[:3])
    assert removed[-1] == occurrence[1] - timedelta(seconds=1), removed[-3:]

    text = _appliance(cluster, jobs_file, "schedule", "diff", "effect", "--from", "1", "--to", "2", "--window", "1h")
    head = f"effect: version 1 ({_hash(cluster, 1)}) -> 2 ({_hash(cluster, 2)}), 0 added, "
    assert text.returncode == 0 and re.match(re.escape(head) + r"\d+ removed until ", text.stdout), text.stdout

    # Bad input: one line naming the problem, exit 2.
    for args, problem in [(("diff", "effect", "--from", "7"), "versions of effect: 1, 2; --from 7 --to 2"),
                          (("diff", "effect", "--window", "soon"), "--window 'soon': expected a duration"),
                          (("diff", "nosuch"), "no stored spec of 'nosuch'"),
                          (("plan", "nosuch"), "unknown job 'nosuch'"),
                          (("plan", "effect", "--next", "0"), "--next must be from 1 to"),
                          (("plan", "effect", "--from", "yesterday"), "--from 'yesterday': expected an ISO time")]:
        bad = _appliance(cluster, jobs_file, "schedule", *args)
        assert bad.returncode == 2 and problem in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)

    (success,) = cluster.sql("SELECT slot FROM job_slots WHERE job = 'effect' AND outcome = 'success' "
                             "ORDER BY slot LIMIT 1")
    (excluded,) = cluster.sql("SELECT slot FROM job_slots WHERE job = 'effect' AND outcome = 'skipped_calendar' "
                              "ORDER BY slot LIMIT 1")
    cluster.sql("UPDATE job_runs SET slot = %s, spec_version = 2 WHERE job = 'effect' AND slot = %s",
                (excluded[0], success[0]))
    code, report = cluster.audit("--since", "10m", env=jobs_env)
    details = [v["detail"] for v in _at(report, excluded[0]) if v["kind"] == "calendar"]
    assert code == 1 and details and "calendar maintenance excludes this slot" in details[0], report["violations"]
