"""call-scheduler: business hours (zones, weekdays, holidays, DST), per-tenant concurrency, retries with
backoff, and the voice provider (the local server of tests/packs/crm/providers.py), with an injected clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from appliance.packs.crm.channels import build_channels
from appliance.packs.crm.jobs.calls import tick
from appliance.packs.crm.jobs.claims import run_session
from appliance.packs.crm.jobs.hours import BusinessHours
from tests.packs.crm.data import phones, tenant

WEEKDAYS_9_TO_17 = {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}


def utc(*args) -> datetime:
    return datetime(*args).replace(tzinfo=UTC)


@pytest.mark.parametrize("zone, hours, holidays, at, expected", [
    # New York: 09:00 is 14:00 UTC before the DST change of Sunday 8 March 2026 and 13:00 UTC after it
    ("America/New_York", WEEKDAYS_9_TO_17, (), utc(2026, 3, 6, 14, 30), utc(2026, 3, 6, 14, 30)),
    ("America/New_York", WEEKDAYS_9_TO_17, (), utc(2026, 3, 6, 13, 30), utc(2026, 3, 6, 14, 0)),
    ("America/New_York", WEEKDAYS_9_TO_17, (), utc(2026, 3, 6, 22, 30), utc(2026, 3, 9, 13, 0)),
    ("America/New_York", WEEKDAYS_9_TO_17, (), utc(2026, 3, 9, 13, 30), utc(2026, 3, 9, 13, 30)),
    ("America/New_York", WEEKDAYS_9_TO_17, (date(2026, 3, 9),), utc(2026, 3, 6, 22, 30), utc(2026, 3, 10, 13, 0)),
    # autumn: 1 November 2026, 09:00 is 13:00 UTC on Friday and 14:00 UTC on Monday
    ("America/New_York", WEEKDAYS_9_TO_17, (), utc(2026, 10, 30, 21, 30), utc(2026, 11, 2, 14, 0)),
    # India has no DST; 09:00 IST is 03:30 UTC
    ("Asia/Kolkata", WEEKDAYS_9_TO_17, (), utc(2026, 3, 9, 20, 0), utc(2026, 3, 10, 3, 30)),
    # an opening inside the skipped spring hour takes the offset from before the change
    ("Europe/Berlin", {"sun": ["02:30-05:00"]}, (), utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 30)),
    ("Asia/Kolkata", {}, (), utc(2026, 3, 9, 20, 0), None),
])
def test_next_opening(zone, hours, holidays, at, expected):
    assert BusinessHours.parse(zone, hours, holidays).next_opening(at) == expected


@pytest.mark.parametrize("zone, country, blackouts, at, expected", [
    # Republic Day (Monday 26 January 2026) closes a tenant with India's public holidays: Tuesday 09:00 IST
    ("Asia/Kolkata", "IN", (), utc(2026, 1, 26, 4, 0), utc(2026, 1, 27, 3, 30)),
    ("Asia/Kolkata", None, (), utc(2026, 1, 26, 4, 0), utc(2026, 1, 26, 4, 0)),
    # Epiphany (Tuesday 6 January 2026) is a public holiday in Bavaria, not in Berlin
    ("Europe/Berlin", "DE-BY", (), utc(2026, 1, 6, 9, 0), utc(2026, 1, 7, 8, 0)),
    ("Europe/Berlin", "DE-BE", (), utc(2026, 1, 6, 9, 0), utc(2026, 1, 6, 9, 0)),
    # a daily lunch blackout (its last minute included): closed from 12:00, open again at 13:00 (EST)
    ("America/New_York", None, ("12:00-12:59",), utc(2026, 3, 6, 17, 15), utc(2026, 3, 6, 18, 0)),
    # dates over Christmas (Thursday to Saturday): the next opening is Monday
    ("America/New_York", None, ("2026-12-24/2026-12-26",), utc(2026, 12, 23, 22, 0), utc(2026, 12, 28, 14, 0)),
    # a window ending mid-morning, after the spring change (EDT): open again at 10:30
    ("America/New_York", None, ("2026-03-10T00:00/2026-03-10T10:29",), utc(2026, 3, 10, 12, 0),
     utc(2026, 3, 10, 14, 30)),
    # a weekly window over the weekend and Monday morning: open at 11:00 on Monday
    ("UTC", None, ("Sat 00:00-Mon 10:59",), utc(2026, 3, 6, 18, 0), utc(2026, 3, 9, 11, 0)),
])
def test_next_opening_past_the_tenants_calendar(zone, country, blackouts, at, expected):
    hours = BusinessHours.parse(zone, WEEKDAYS_9_TO_17, (), country, blackouts)
    assert hours.next_opening(at) == expected
    assert hours.closed_because(at) is None or hours.next_opening(at) != at


@pytest.mark.parametrize("country, blackouts, problem", [
    ("XX", (), "bad holidays of the tenant: unknown country or region"),
    ("DE-ZZ", (), "bad holidays of the tenant: unknown country or region"),
    (None, ("lunchtime",), "bad holidays of the tenant: unreadable blackout 'lunchtime'"),
])
def test_bad_tenant_calendars_are_reported(country, blackouts, problem):
    with pytest.raises(ValueError, match=problem):
        BusinessHours.parse("UTC", WEEKDAYS_9_TO_17, (), country, blackouts)


@pytest.mark.parametrize("zone, hours, problem", [
    ("Mars/Olympus", {}, "unknown time zone"),
    ("UTC", {"monday": ["09:00-17:00"]}, "unknown weekday"),
    ("UTC", {"mon": ["17:00-09:00"]}, "start before end"),
    ("UTC", {"mon": ["9-5"]}, "expected 'HH:MM-HH:MM'"),
])
def test_bad_business_hours_are_reported(zone, hours, problem):
    with pytest.raises(ValueError, match=problem):
        BusinessHours.parse(zone, hours)


def queue_calls(sql, tenant_id: int, numbers: list[str], at: datetime) -> list[int]:
    return [r[0] for r in sql("INSERT INTO calls (tenant_id, phone, scheduled_at) SELECT %s, p, %s "
                              "FROM unnest(%s::text[]) AS p RETURNING id", (tenant_id, at, numbers))]


def states(sql) -> dict[str, int]:
    return dict(sql("SELECT status, count(*) FROM calls GROUP BY status"))


def run_tick(make_ctx, now: datetime, **env):
    ctx = make_ctx("call-scheduler", **env)
    channels = build_channels(ctx.config.crm, ctx.sleep)
    try:
        with run_session(ctx) as conn:
            return tick(conn, ctx, channels, now), ctx
    finally:
        channels.close()


MONDAY_10_NY = utc(2026, 3, 9, 14, 0)  # 10:00 in New York, 19:30 in Kolkata


def test_open_tenants_dial_up_to_their_cap_closed_ones_move_to_the_next_opening(make_ctx, sql):
    ny = tenant(sql, "NY", timezone="America/New_York", max_concurrent_calls=2)
    india = tenant(sql, "IN", timezone="Asia/Kolkata")
    queue_calls(sql, ny, phones(5), MONDAY_10_NY - timedelta(minutes=5))
    later = queue_calls(sql, ny, phones(1, start=50), MONDAY_10_NY + timedelta(hours=1))
    queue_calls(sql, india, phones(3, start=100), MONDAY_10_NY - timedelta(minutes=5))
    counts, ctx = run_tick(make_ctx, MONDAY_10_NY)
    assert counts["dialled"] == 2 and counts["rescheduled"] == 3
    assert sql("SELECT DISTINCT scheduled_at FROM calls WHERE tenant_id = %s", (india,)) == [(utc(2026, 3, 10, 3, 30),)]
    assert states(sql) == {"completed": 2, "queued": 7}, "the outbox channel records a call and finishes it"
    assert sql("SELECT outcome, attempts FROM calls WHERE status = 'completed'") == [("recorded", 1)] * 2
    assert sql("SELECT count(*) FROM call_attempts WHERE outcome = 'recorded'") == [(2,)]
    assert sql("SELECT count(*) FROM outbox WHERE channel = 'voice'") == [(2,)]
    assert ctx.backlog["calls_queued"] == 3 and ctx.processed_count == 2
    counts, _ = run_tick(make_ctx, MONDAY_10_NY + timedelta(seconds=30))
    assert counts["dialled"] == 2 and sql("SELECT status FROM calls WHERE id = %s", (later[0],)) == [("queued",)]


def test_a_tenant_with_its_countrys_public_holidays_waits_for_the_day_after(make_ctx, sql, caplog):
    """On Republic Day (26 January 2026, a Monday) a tenant closed on India's public holidays moves its due calls
    to Tuesday 09:00 IST; a tenant of the same zone and hours without them dials; one whose country the
    ``holidays`` library does not know is skipped (its calls wait) and the log names the problem."""
    republic_day_10 = utc(2026, 1, 26, 4, 30)
    closed = tenant(sql, "Pune", timezone="Asia/Kolkata", holiday_country="IN")
    open_ = tenant(sql, "Pune (no holidays)", timezone="Asia/Kolkata")
    unknown = tenant(sql, "Nowhere", timezone="Asia/Kolkata", holiday_country="XX")
    for t in (closed, open_, unknown):
        queue_calls(sql, t, phones(2, start=10 * t), republic_day_10 - timedelta(minutes=5))
    counts, _ = run_tick(make_ctx, republic_day_10)
    assert counts["rescheduled"] == 2 and counts["dialled"] == 2
    assert sql("SELECT DISTINCT scheduled_at FROM calls WHERE tenant_id = %s", (closed,)) == \
        [(utc(2026, 1, 27, 3, 30),)]
    assert sql("SELECT DISTINCT status FROM calls WHERE tenant_id = %s", (open_,)) == [("completed",)]
    assert sql("SELECT DISTINCT status, scheduled_at FROM calls WHERE tenant_id = %s", (unknown,)) == \
        [("queued", republic_day_10 - timedelta(minutes=5))]
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"tenant {unknown}: calls not dialled: bad holidays of the tenant: unknown country" in line
               for line in lines), lines
    counts, _ = run_tick(make_ctx, utc(2026, 1, 27, 3, 30))
    assert counts["dialled"] == 2 and sql("SELECT DISTINCT status FROM calls WHERE tenant_id = %s", (closed,)) == \
        [("completed",)]


def test_invalid_numbers_fail_with_a_reason_and_suspended_tenants_are_not_dialled(make_ctx, sql):
    active = tenant(sql, "A", timezone="America/New_York")
    suspended = tenant(sql, "S", timezone="America/New_York", status="suspended")
    queue_calls(sql, active, ["+1202555", "+12025550100"], MONDAY_10_NY)
    queue_calls(sql, suspended, phones(2), MONDAY_10_NY)
    run_tick(make_ctx, MONDAY_10_NY)
    rows = dict(sql("SELECT phone, status || ':' || coalesce(error, '') FROM calls WHERE tenant_id = %s", (active,)))
    assert rows["+1202555"].startswith("failed:invalid phone number") and rows["+12025550100"] == "completed:"
    assert sql("SELECT count(*) FROM calls WHERE tenant_id = %s AND status = 'queued'", (suspended,)) == [(2,)]


def voice_env(provider) -> dict[str, str]:
    return {"VOICE_CHANNEL": "http", "VOICE_API_URL": provider.url, "VOICE_API_TOKEN": "test-token",
            "CALL_MAX_ATTEMPTS": "2", "CALL_RETRY_BACKOFF": "600", "CALL_MAX_CONCURRENT": "2"}


def test_provider_calls_are_polled_unanswered_ones_retried_with_backoff_then_failed(make_ctx, sql, provider):
    t = tenant(sql, "NY", timezone="America/New_York")
    answered, missed, waiting = queue_calls(sql, t, phones(3), MONDAY_10_NY)
    env = voice_env(provider)
    counts, _ = run_tick(make_ctx, MONDAY_10_NY, **env)
    assert counts["dialled"] == 2 and states(sql) == {"dialing": 2, "queued": 1}, "two at a time"
    ids = dict(sql("SELECT id, provider_call_id FROM calls WHERE status = 'dialing'"))
    provider.call_status.update({ids[answered]: "completed", ids[missed]: "no-answer"})
    now = MONDAY_10_NY + timedelta(seconds=30)
    counts, _ = run_tick(make_ctx, now, **env)
    assert counts["polled"] == 2 and counts["dialled"] == 1
    assert sql("SELECT status, outcome FROM calls WHERE id = %s", (answered,)) == [("completed", "completed")]
    assert sql("SELECT status, scheduled_at FROM calls WHERE id = %s", (missed,)) == \
        [("queued", now + timedelta(seconds=600))], "backoff before the next attempt"
    provider.call_status[sql("SELECT provider_call_id FROM calls WHERE id = %s", (waiting,))[0][0]] = "busy"
    now = now + timedelta(seconds=601)
    run_tick(make_ctx, now, **env)  # polls 'waiting' (busy: queued again) and dials 'missed' again
    provider.call_status[sql("SELECT provider_call_id FROM calls WHERE id = %s", (missed,))[0][0]] = "no-answer"
    run_tick(make_ctx, now + timedelta(seconds=30), **env)
    assert sql("SELECT status, attempts, error FROM calls WHERE id = %s", (missed,)) == \
        [("failed", 2, "gave up after 2 attempts: no-answer")]
    assert sql("SELECT attempt, outcome FROM call_attempts WHERE call_id = %s ORDER BY attempt", (missed,)) == \
        [(1, "no-answer"), (2, "no-answer")]
    assert all(count == 1 for count in provider.delivered.values())


def test_a_dial_interrupted_by_a_crash_is_redialled_under_the_same_key(make_ctx, sql, provider):
    t = tenant(sql, "NY", timezone="America/New_York")
    (call,) = queue_calls(sql, t, phones(1), MONDAY_10_NY)
    key = f"call:{call}:1"
    # what a run that died mid-dial leaves: the call claimed by its fence, the outbox row still 'sending'
    dead = make_ctx("call-scheduler")
    sql("UPDATE calls SET status = 'dialing', attempts = 1, claim_fence = %s, dialed_at = %s WHERE id = %s",
        (dead.fence, MONDAY_10_NY, call))
    sql("INSERT INTO outbox (idempotency_key, tenant_id, channel, transport, recipient, status) "
        "VALUES (%s, %s, 'voice', 'http', '+12025550000', 'sending')", (key, t))
    provider.answers[key] = {"id": "call-early", "status": "queued"}  # the provider did get the first dial
    provider.delivered[key] = 1
    counts, _ = run_tick(make_ctx, MONDAY_10_NY + timedelta(seconds=30), **voice_env(provider))
    assert counts["reconciled"] == 1 and counts["dialled"] == 1
    assert sql("SELECT status, attempts, provider_call_id FROM calls") == [("dialing", 1, "call-early")]
    assert provider.delivered[key] == 1 and [r[2] for r in provider.requests] == [key]
