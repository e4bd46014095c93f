"""``appliance schedule plan`` and ``diff`` against golden files across DST changes (spring gaps, autumn folds, and
Lord Howe's half-hour shift): the plan of a spec is fixed text, the same on every machine. ``UPDATE_GOLDEN=1``
rewrites the files (read the diff before committing)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from appliance.kernel.contract.policy import Policy
from appliance.kernel.contract.spec import EffectiveSpec
from appliance.kernel.schedule.calendars import Blackout, Calendar
from appliance.kernel.schedule.model import parse_schedule
from appliance.kernel.schedule.plan import diff, plan_lines

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    # zone, schedule, from (local), slots, jitter
    "berlin_spring_half_hourly": ("Europe/Berlin", "*/30 * * * *", "2026-03-29T01:00", 6, 0.0),
    "berlin_autumn_0230_daily": ("Europe/Berlin", "02:30", "2026-10-24T00:00", 3, 0.0),
    "berlin_autumn_hourly_jitter": ("Europe/Berlin", "0 * * * *", "2026-10-25T00:30", 5, 600.0),
    "new_york_spring_0230": ("America/New_York", "30 2 * * *", "2026-03-07T12:00", 3, 0.0),
    "new_york_autumn_every_20m": ("America/New_York", "every 20m between 00:00-04:00", "2026-11-01T00:50", 8, 0.0),
    "lord_howe_autumn_half_hour_fold": ("Australia/Lord_Howe", "*/15 * * * *", "2026-04-05T01:10", 8, 0.0),
    "lord_howe_spring_half_hour_gap": ("Australia/Lord_Howe", "0,15,30,45 2 * * *", "2026-10-03T12:00", 4, 0.0),
}


def _check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; UPDATE_GOLDEN=1 rewrites it"


def _spec(zone: str, schedule: str, jitter: float, calendars: tuple[Calendar, ...] = ()) -> EffectiveSpec:
    return EffectiveSpec("report", parse_schedule(schedule, zone), 60.0, 60.0, 3, Policy(jitter=jitter,
                                                                                           calendars=calendars))


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_across_dst(name):
    zone, schedule, start, count, jitter = CASES[name]
    spec = _spec(zone, schedule, jitter)
    after = datetime.fromisoformat(start).replace(tzinfo=ZoneInfo(zone))
    _check(name, "\n".join(plan_lines(spec.plan(after, count))) + "\n")


def test_plan_shows_calendar_exclusions_with_their_reason():
    weekend = Calendar("weekend", blackouts=(Blackout.parse("Sat 00:00-Sun 23:59"),))
    india = Calendar("holidays:IN", holidays="IN")
    spec = _spec("Asia/Kolkata", "09:00", 0.0, (weekend, india))
    after = datetime(2026, 11, 5, tzinfo=ZoneInfo("Asia/Kolkata"))
    _check("kolkata_calendars", "\n".join(plan_lines(spec.plan(after, 6))) + "\n")


def test_diff_of_two_versions_across_dst():
    old = _spec("Europe/Berlin", "02:30", 0.0)
    new = _spec("Europe/Berlin", "every 12h", 0.0)
    after = datetime(2026, 3, 27, tzinfo=ZoneInfo("Europe/Berlin"))
    until = datetime(2026, 3, 31, tzinfo=ZoneInfo("Europe/Berlin"))
    added, removed = diff(old.fire_times(after, until), new.fire_times(after, until))
    text = "\n".join([f"+ {s.start.isoformat()} ({s.local.isoformat()})" for s in added]
                     + [f"- {s.start.isoformat()} ({s.local.isoformat()})" for s in removed]) + "\n"
    _check("berlin_diff_0230_to_12h", text)


def test_a_spec_round_trips_through_its_json_with_the_same_hash():
    weekend = Calendar("weekend", blackouts=(Blackout.parse("Sat 00:00-Sun 23:59"),), holidays="DE", region="BY")
    spec = _spec("Europe/Berlin", "0 * * * *", 30.0, (weekend,))
    again = EffectiveSpec.from_json(spec.to_json())
    assert again.hash == spec.hash and again.to_json() == spec.to_json()
    assert _spec("Europe/Berlin", "0 * * * *", 31.0, (weekend,)).hash != spec.hash
