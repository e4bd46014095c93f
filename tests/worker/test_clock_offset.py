"""The worker's measure of its own clock against Redis' (``TIME``), with a real redis-server and a stepped
clock standing for a wall clock that is off: the offset and its error bound, and a verdict that changes only
on evidence, with one log line each way. (Whole workers under libfaketime: tests/faults/test_clock_skew.py.)"""

from __future__ import annotations

import logging

import pytest

from appliance.kernel.runtime import metrics
from appliance.kernel.runtime.clock import SYSTEM, SteppedClock
from appliance.kernel.runtime.skew import Offset, SkewWatch, measure


class _OffClock(SteppedClock):
    """A wall clock ``offset`` seconds off the true time, moving with it (a loaded machine may take a while
    between two checks), whose monotonic clock does not move by itself: a round trip measured on it takes no
    time, so the error bound is 0."""

    def __init__(self, offset: float) -> None:
        super().__init__(SYSTEM.now())
        self.off = offset

    def time(self) -> float:
        return SYSTEM.time() + self.off


def _clock(offset: float) -> SteppedClock:
    return _OffClock(offset)


@pytest.mark.parametrize("offset", [4.0, -4.0, 0.0])
def test_the_offset_is_this_clock_minus_redis_clock(redis_server, offset):
    measured = measure(redis_server.client(), _clock(offset))
    assert abs(measured.seconds - offset) < 0.05 and measured.error == 0


def test_the_error_bound_is_half_the_round_trip(redis_server):
    measured = measure(redis_server.client())
    assert abs(measured.seconds) < 0.05 and 0 < measured.error < 0.05


def test_past_and_within_need_evidence_beyond_the_error():
    assert Offset(1.5, 0.2).past(1.0) and not Offset(1.5, 0.2).within(1.0)
    assert Offset(-1.5, 0.2).past(1.0)
    uncertain = Offset(1.1, 0.2)  # 0.9 .. 1.3: neither surely past 1 s nor surely within it
    assert not uncertain.past(1.0) and not uncertain.within(1.0)
    assert Offset(0.7, 0.2).within(1.0) and not Offset(0.7, 0.2).past(1.0)


def test_the_watch_warns_once_past_the_threshold_and_says_once_when_it_is_back(redis_server, caplog):
    client = redis_server.client()
    watch = SkewWatch(client, threshold=1.0, clock=_clock(2.5))
    with caplog.at_level(logging.INFO, logger="appliance.worker.clock"):
        for _ in range(3):
            assert abs(watch.check().seconds - 2.5) < 0.05
        assert watch.skewed and metrics.CLOCK_OFFSET._value.get() == pytest.approx(2.5, abs=0.05)
        watch.clock = _clock(-0.2)  # the clock was stepped back into line
        for _ in range(3):
            watch.check()
        assert not watch.skewed
    lines = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert lines == [("WARNING", "CLOCK SKEW"), ("INFO", "clock skew over")], lines
    warning = caplog.records[0].getMessage()
    assert "clock is +2.4" in warning or "clock is +2.5" in warning
    assert "s off Redis' clock (past CLOCK_SKEW_WARN=1s)" in warning and "early" in warning
