"""Calendars as pure functions of a slot's instant and the job's zone: a recurring RFC 5545 event (written with
``icalendar``) excludes the same instants whatever the job's zone, and a blackout says where it reopens."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar as IcsCalendar
from icalendar import Event

from appliance.kernel.schedule.calendars import Blackout, Calendar, CalendarError, make_calendar


def _daily_event(start: datetime, end: datetime) -> str:
    calendar = IcsCalendar()
    calendar.add("prodid", "-//appliance tests//EN")
    calendar.add("version", "2.0")
    event = Event()
    event.add("uid", "daily@appliance.test")
    event.add("summary", "Backup window")
    event.add("dtstamp", start)
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("rrule", {"freq": "daily"})
    calendar.add_component(event)
    return calendar.to_ical().decode()


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Auckland",
                                  "America/Los_Angeles"])
def test_a_recurring_event_in_utc_excludes_the_same_instants_in_every_zone(zone):
    """10:00-11:00 UTC every day since 1 March: on 10 March, 09:59 and 11:00 run, 10:00 to 10:59 do not. A
    zone behind UTC once looked for the occurrence on its own wall clock and found the day before's."""
    ics = _daily_event(datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 11, tzinfo=UTC))
    calendar = Calendar("backups", ics=ics)
    found = [calendar.excluded(datetime(2026, 3, 10, h, m, tzinfo=UTC), ZoneInfo(zone))
             for h, m in ((9, 59), (10, 0), (10, 30), (10, 59), (11, 0))]
    assert found == [None] + ["calendar event: Backup window"] * 3 + [None]


@pytest.mark.parametrize("text, day, expected", [
    ("12:00-12:59", date(2026, 3, 10), (time(13, 0),)),
    ("22:00-06:00", date(2026, 3, 10), (time(6, 1),)),
    ("Sat 00:00-Sun 23:59", date(2026, 3, 9), (time(0, 0),)),  # Monday
    ("Sat 00:00-Sun 23:59", date(2026, 3, 10), ()),
    ("2026-12-24/2026-12-26", date(2026, 12, 27), (time(0, 0),)),
    ("2026-12-24/2026-12-26", date(2026, 12, 26), ()),
    ("2026-03-10T00:00/2026-03-10T10:29", date(2026, 3, 10), (time(10, 30),)),
])
def test_a_blackout_reopens_the_minute_after_its_last(text, day, expected):
    assert Blackout.parse(text).reopens_on(day) == expected


def test_a_calendar_reopens_the_day_after_a_holiday_or_date():
    calendar = make_calendar("tenant", [date(2026, 3, 2)], "IN", ["12:00-12:59"])
    assert calendar.reopens_on(date(2026, 3, 3)) == (time(0, 0), time(13, 0))
    assert calendar.reopens_on(date(2026, 1, 27)) == (time(0, 0), time(13, 0))  # after Republic Day
    assert calendar.reopens_on(date(2026, 1, 28)) == (time(13, 0),)


@pytest.mark.parametrize("holidays, blackout, problem", [
    ("XX", (), "unknown country or region"),
    ("DE-XX", (), "unknown country or region"),
    (None, ("noon",), "unreadable blackout 'noon'"),
])
def test_make_calendar_names_what_it_cannot_read(holidays, blackout, problem):
    with pytest.raises(CalendarError, match=problem):
        make_calendar("tenant", (), holidays, blackout)


def _one_event(start: datetime, end: datetime | None) -> str:
    calendar = IcsCalendar()
    calendar.add("prodid", "-//appliance tests//EN")
    calendar.add("version", "2.0")
    event = Event()
    event.add("uid", "once@appliance.test")
    event.add("summary", "Deploy")
    event.add("dtstamp", start)
    event.add("dtstart", start)
    if end is not None:
        event.add("dtend", end)
    calendar.add_component(event)
    return calendar.to_ical().decode()


@pytest.mark.parametrize("end, last_excluded, first_running", [
    # DTEND is exclusive: a 20-second event covers 20 seconds, not the rest of its minute
    (datetime(2026, 3, 10, 10, 0, 20, tzinfo=UTC), 19, 20),
    # without DTEND or DURATION a timed event covers its minute
    (None, 59, 60),
])
def test_a_timed_event_covers_its_span(end, last_excluded, first_running):
    start = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    calendar = Calendar("deploys", ics=_one_event(start, end))
    zone = ZoneInfo("Europe/Berlin")
    at = [start.replace(second=0) + timedelta(seconds=s) for s in (-1, 0, last_excluded, first_running)]
    assert [calendar.excluded(slot, zone) for slot in at] == [None, "calendar event: Deploy",
                                                               "calendar event: Deploy", None]


def test_the_calendar_libraries_load_only_where_a_calendar_uses_them():
    """icalendar (8 MiB) and holidays load when a calendar names an .ics file or a country, not in every
    worker: a worker whose jobs have no calendar does not pay for them."""
    import subprocess
    import sys

    probe = ("import sys, appliance.worker.main, appliance.kernel.schedule.calendars as c; "
             "before = [m in sys.modules for m in ('icalendar', 'holidays')]; "
             "c.check_holidays('IN', None); "
             "print(before, 'holidays' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[False, False] True"
