"""The clock module: the system clock's shapes, and a stepped clock that moves only when told."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from appliance.kernel.runtime.clock import SYSTEM, SteppedClock

START = datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)


def test_system_clock_reads_aware_utc_and_agrees_with_itself():
    before = time.time()
    now = SYSTEM.now()
    after = time.time()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert before - 0.001 <= now.timestamp() <= after + 0.001
    first = SYSTEM.monotonic()
    assert SYSTEM.monotonic() >= first


def test_system_clock_wait_returns_whether_woken():
    event = threading.Event()
    assert SYSTEM.wait(event, 0) is False
    assert SYSTEM.wait(event, -1) is False
    event.set()
    assert SYSTEM.wait(event, 5) is True


def test_stepped_clock_stands_still_until_advanced():
    clock = SteppedClock(START)
    assert clock.now() == START and clock.time() == START.timestamp()
    mono = clock.monotonic()
    time.sleep(0.01)
    assert clock.now() == START and clock.monotonic() == mono
    clock.advance(1.5)
    assert clock.now() == START + timedelta(seconds=1.5)
    assert clock.monotonic() == mono + 1.5
    assert clock.now().tzinfo == UTC


def test_stepped_clock_set_moves_forward_only():
    clock = SteppedClock(START)
    clock.set(START + timedelta(hours=2))
    assert clock.now() == START + timedelta(hours=2)
    assert clock.monotonic() == 7200
    with pytest.raises(ValueError, match="does not go back"):
        clock.set(START)
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


def test_stepped_clock_refuses_a_naive_start():
    with pytest.raises(ValueError, match="timezone-aware"):
        SteppedClock(datetime(2026, 1, 1))


def _in_thread(target) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run():
        result["value"] = target()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_sleep_ends_when_the_clock_passes_its_deadline_not_before():
    clock = SteppedClock(START)
    thread, _ = _in_thread(lambda: clock.sleep(30))
    clock.wait_for_waiters(1)
    clock.advance(29.999)
    thread.join(0.05)
    assert thread.is_alive(), "woke before its deadline"
    clock.advance(0.001)
    thread.join(5)
    assert not thread.is_alive()
    assert clock.waiters == 0


def test_wait_times_out_on_clock_time():
    clock = SteppedClock(START)
    event = threading.Event()
    thread, result = _in_thread(lambda: clock.wait(event, 10))
    clock.wait_for_waiters(1)
    clock.advance(9)
    thread.join(0.05)
    assert thread.is_alive()
    clock.advance(1)
    thread.join(5)
    assert result == {"value": False}


def test_wait_returns_true_when_woken_before_the_deadline():
    clock = SteppedClock(START)
    event = threading.Event()
    thread, result = _in_thread(lambda: clock.wait(event, 3600))
    clock.wait_for_waiters(1)
    event.set()
    thread.join(5)
    assert result == {"value": True}
    assert clock.monotonic() == 0


def test_wait_on_a_held_condition_wakes_on_notify():
    clock = SteppedClock(START)
    cond = threading.Condition()

    def waiter():
        with cond:
            return clock.wait(cond, 3600)

    thread, result = _in_thread(waiter)
    clock.wait_for_waiters(1)
    with cond:
        cond.notify_all()
    thread.join(5)
    assert result == {"value": True}


def test_wait_without_timeout_waits_for_the_waitable_only():
    clock = SteppedClock(START)
    event = threading.Event()
    thread, result = _in_thread(lambda: clock.wait(event, None))
    clock.wait_for_waiters(1)
    clock.advance(10**6)
    thread.join(0.05)
    assert thread.is_alive()
    event.set()
    thread.join(5)
    assert result == {"value": True}


def test_auto_advance_moves_the_clock_instead_of_blocking():
    clock = SteppedClock(START, auto_advance=True)
    clock.sleep(5)
    assert clock.monotonic() == 5
    event = threading.Event()
    assert clock.wait(event, 7) is False
    assert clock.monotonic() == 12
    event.set()
    assert clock.wait(event, 7) is True
    assert clock.monotonic() == 12


def test_wait_for_waiters_gives_up_in_real_time():
    clock = SteppedClock(START)
    with pytest.raises(TimeoutError, match="0 of 1 threads"):
        clock.wait_for_waiters(1, timeout=0.05)
