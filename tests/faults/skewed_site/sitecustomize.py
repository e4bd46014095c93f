"""Imported at start (as ``sitecustomize``) by the worker processes of the clock-skew fault tests only, which
run under libfaketime with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` (see ``tests.faults.skew``).

libfaketime (0.9.10) turns the absolute ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` that ``time.sleep``
makes into an invalid request (EINVAL) when it leaves the monotonic clock alone, and faking that clock instead
makes every timed wait of ``threading`` hang. Timed waits on a ``threading.Event`` use the real monotonic
clock untouched, so ``time.sleep`` becomes one: the same relative wait, measured on the same clock.
"""

import threading
import time
from typing import SupportsIndex


def _sleep(seconds: float | SupportsIndex) -> None:
    wait = float(seconds)
    if wait < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(wait)


time.sleep = _sleep
