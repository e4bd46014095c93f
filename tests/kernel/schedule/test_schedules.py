"""The schedule model as pure functions of a given time: forms, alignment, zones and DST."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from appliance.errors import ScheduleError
from appliance.kernel.schedule.model import parse_schedule


def utc(*args: Any) -> datetime:
    return datetime(*args).replace(tzinfo=UTC)


def local(zone: str, *args: Any, fold: int = 0) -> datetime:
    return datetime(*args).replace(tzinfo=ZoneInfo(zone), fold=fold)


@pytest.mark.parametrize("text, after, expected", [
    ("30s", utc(2024, 5, 1, 10, 0, 7, 123), [utc(2024, 5, 1, 10, 0, 30), utc(2024, 5, 1, 10, 1, 0)]),
    ("every 30s", utc(2024, 5, 1, 10, 0, 30), [utc(2024, 5, 1, 10, 1, 0), utc(2024, 5, 1, 10, 1, 30)]),
    ("5m", utc(2024, 5, 1, 10, 3), [utc(2024, 5, 1, 10, 5), utc(2024, 5, 1, 10, 10)]),
    ("1h", utc(2024, 5, 1, 10, 59, 59), [utc(2024, 5, 1, 11), utc(2024, 5, 1, 12)]),
    ("02:00", utc(2024, 5, 1, 3), [utc(2024, 5, 2, 2), utc(2024, 5, 3, 2)]),
    ("daily at 02:00", utc(2024, 5, 1, 1), [utc(2024, 5, 1, 2), utc(2024, 5, 2, 2)]),
    # 2024-05-01 is a Wednesday.
    ("mon 09:00", utc(2024, 5, 1), [utc(2024, 5, 6, 9), utc(2024, 5, 13, 9)]),
    ("mon,wed,fri 09:00", utc(2024, 5, 1, 9), [utc(2024, 5, 3, 9), utc(2024, 5, 6, 9)]),
    ("weekdays 09:00", utc(2024, 5, 3, 10), [utc(2024, 5, 6, 9), utc(2024, 5, 7, 9)]),
    ("*/5 * * * *", utc(2024, 5, 1, 10, 2), [utc(2024, 5, 1, 10, 5), utc(2024, 5, 1, 10, 10)]),
    ("*/30 * * * * *", utc(2024, 5, 1, 10, 0, 1), [utc(2024, 5, 1, 10, 0, 30), utc(2024, 5, 1, 10, 1)]),
    ("0 2 * * *", utc(2024, 5, 1, 2), [utc(2024, 5, 2, 2), utc(2024, 5, 3, 2)]),
    ("0 9 * * 1-5", utc(2024, 5, 3, 9), [utc(2024, 5, 6, 9), utc(2024, 5, 7, 9)]),
    # The end is excluded, as business hours' is: the evening's last slot is 19:00.
    ("every 1h between 08:00-20:00", utc(2024, 5, 1, 18, 30),
     [utc(2024, 5, 1, 19), utc(2024, 5, 2, 8), utc(2024, 5, 2, 9)]),
    # Friday evening: a weekdays window resumes on Monday morning.
    ("every 1h between 08:00-20:00 weekdays", utc(2024, 5, 3, 19), [utc(2024, 5, 6, 8), utc(2024, 5, 6, 9)]),
    # Overnight window: belongs to the day it starts on.
    ("every 2h between 22:00-02:00", utc(2024, 5, 1, 21), [utc(2024, 5, 1, 22), utc(2024, 5, 2, 0),
                                                             utc(2024, 5, 2, 22)]),
])
def test_forms_fire_on_wall_clock_slots(text, after, expected):
    assert parse_schedule(text).next_runs(after, len(expected)) == expected


def test_interval_slots_are_aligned_and_never_drift_over_a_day():
    schedule = parse_schedule("30s")
    runs = schedule.next_runs(utc(2024, 5, 1, 0, 0, 13, 999_999), 2880)
    assert runs[0] == utc(2024, 5, 1, 0, 0, 30)
    assert runs[-1] == utc(2024, 5, 2, 0, 0, 0)
    assert all(t.second in (0, 30) and t.microsecond == 0 for t in runs)
    assert {b - a for a, b in itertools.pairwise(runs)} == {timedelta(seconds=30)}


def test_interval_that_does_not_divide_a_day_is_aligned_to_the_epoch():
    schedule = parse_schedule("7m")
    slot = schedule.next_after(utc(2024, 5, 1, 12, 0))
    assert (slot - utc(1970, 1, 1)) % timedelta(minutes=7) == timedelta(0)
    assert slot - utc(2024, 5, 1, 12, 0) <= timedelta(minutes=7)


@pytest.mark.parametrize("text, zone, after, expected", [
    ("02:00", "Asia/Kolkata", utc(2024, 5, 1, 0), utc(2024, 5, 1, 20, 30)),
    ("mon 09:00", "America/New_York", utc(2024, 5, 1), utc(2024, 5, 6, 13)),
    ("0 9 * * *", "Europe/Paris", utc(2024, 1, 10, 9), utc(2024, 1, 11, 8)),
    ("1h", "Asia/Kolkata", utc(2024, 5, 1, 0, 10), utc(2024, 5, 1, 0, 30)),  # local hours at :30 UTC
])
def test_time_zone_places_wall_times(text, zone, after, expected):
    assert parse_schedule(text, zone).next_after(after) == expected


@pytest.mark.parametrize("text", ["02:30", "30 2 * * *"])
def test_spring_gap_runs_once_at_first_valid_instant(text):
    """Europe/Berlin skips 02:00-03:00 on 2024-03-31: 02:30 runs at 03:00 local (01:00 UTC)."""
    schedule = parse_schedule(text, "Europe/Berlin")
    runs = schedule.next_runs(utc(2024, 3, 30, 12), 3)
    assert runs == [utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 0, 30), utc(2024, 4, 2, 0, 30)]


@pytest.mark.parametrize("text", ["02:30", "30 2 * * *"])
def test_autumn_fold_runs_a_fixed_time_once(text):
    """Europe/Berlin repeats 02:00-03:00 on 2024-10-27: 02:30 runs at its first occurrence only."""
    schedule = parse_schedule(text, "Europe/Berlin")
    runs = schedule.next_runs(utc(2024, 10, 26, 12), 3)
    assert runs == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30), utc(2024, 10, 29, 1, 30)]
    # From inside the second pass of the repeated hour, the slot is not run again.
    assert schedule.next_after(local("Europe/Berlin", 2024, 10, 27, 2, 10, fold=1)) == utc(2024, 10, 28, 1, 30)


@pytest.mark.parametrize("day, count", [((2024, 3, 31), 23), ((2024, 10, 27), 25), ((2024, 6, 1), 24)])
def test_hourly_follows_elapsed_time_through_dst(day, count):
    schedule = parse_schedule("1h", "Europe/Berlin")
    start = local("Europe/Berlin", *day).astimezone(UTC)
    end = (local("Europe/Berlin", *day) + timedelta(days=1)).astimezone(UTC)
    runs = schedule.next_runs(start - timedelta(microseconds=1), 30)
    assert len([t for t in runs if t < end]) == count
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(runs))


def test_seed_002s_hourly_window_from_08_00_to_20_00_runs_12_times_a_day():
    """Seed 002: "every hour from 8:00 AM to 8:00 PM (12 times per day)"."""
    runs = parse_schedule("every 1h between 08:00-20:00").next_runs(utc(2024, 5, 1) - timedelta(microseconds=1), 30)
    days = Counter(t.date() for t in runs if t < utc(2024, 5, 3))
    assert days == {date(2024, 5, 1): 12, date(2024, 5, 2): 12}
    assert [t.hour for t in runs[:12]] == list(range(8, 20))


@pytest.mark.parametrize("text, after, expected", [
    ("every 30m between 09:00-17:30", utc(2024, 5, 1),
     [utc(2024, 5, 1, 9) + timedelta(minutes=30 * k) for k in range(17)]),
    # A step that does not divide the window: the last slot is the last one before the end.
    ("every 45m between 08:00-10:00", utc(2024, 5, 1), [utc(2024, 5, 1, 8), utc(2024, 5, 1, 8, 45),
                                                         utc(2024, 5, 1, 9, 30)]),
    # Overnight, from 22:00 on the 1st to 06:00 on the 2nd.
    ("every 2h between 22:00-06:00", utc(2024, 5, 1, 12), [utc(2024, 5, 1, 22), utc(2024, 5, 2, 0),
                                                            utc(2024, 5, 2, 2), utc(2024, 5, 2, 4)]),
])
def test_a_window_runs_from_its_start_up_to_but_not_at_its_end(text, after, expected):
    *runs, following = parse_schedule(text).next_runs(after, len(expected) + 1)
    assert runs == expected
    assert following == expected[0] + timedelta(days=1), "then nothing until the next day's window"


def test_last_at_or_before_is_the_slot_a_restarted_worker_misses():
    schedule = parse_schedule("02:00", "UTC")
    assert schedule.last_at_or_before(utc(2024, 5, 1, 2)) == utc(2024, 5, 1, 2)
    assert schedule.last_at_or_before(utc(2024, 5, 1, 1, 59)) == utc(2024, 4, 30, 2)
    assert parse_schedule("30s").last_at_or_before(utc(2024, 5, 1, 10, 0, 59)) == utc(2024, 5, 1, 10, 0, 30)


@pytest.mark.parametrize("text, period", [
    ("30s", timedelta(seconds=30)), ("5m", timedelta(minutes=5)), ("02:00", timedelta(days=1)),
    ("mon 09:00", timedelta(days=7)), ("*/30 * * * * *", timedelta(seconds=30)),
    ("every 1h between 08:00-20:00", timedelta(hours=1)),
])
def test_period_is_the_smallest_gap(text, period):
    assert parse_schedule(text).period == period


@pytest.mark.parametrize("text, words", [
    ("0s", "positive"), ("-5m", "positive"), ("abc", "expected an interval"), ("", "expected"),
    ("25:00", "not a time of day"), ("funday 09:00", "unknown days"),
    ("* * *", "5 fields"), ("61 * * * *", "invalid schedule"), ("*/0 * * * *", "invalid schedule"),
    ("every 1h between 08:00-08:00", "different start and end"), ("400d", "at most"),
])
def test_bad_schedules_name_the_text_and_what_was_expected(text, words):
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text)
    message = str(caught.value)
    assert words in message
    assert repr(text) in message


def test_unknown_zone_is_an_error():
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        parse_schedule("02:00", "Mars/Olympus")


def test_times_must_be_aware():
    with pytest.raises(ValueError):
        parse_schedule("30s").next_after(datetime(2024, 5, 1))
