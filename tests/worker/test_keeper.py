"""The lease keeper against a real redis-server behind a TCP proxy (``tests/proxy.py``) that the test cuts:
connections stay open and no byte moves, so only the keeper's own deadline can end the run in time."""

from __future__ import annotations

import threading
import time
from typing import cast

import pytest

from appliance.kernel.contract.context import CancelToken
from appliance.kernel.protocol import locks
from appliance.kernel.protocol.owner import make_token, new_run_id
from appliance.kernel.runtime.clients import REDIS_SOCKET_TIMEOUT, bounded, make_redis
from appliance.kernel.runtime.clock import SYSTEM
from appliance.worker.heartbeat import Beats, Heartbeat
from appliance.worker.leases import Lease, LeaseKeeper, call_timeout, lease_margin
from tests.proxy import Proxy


@pytest.fixture
def proxy(redis_server):
    proxy = Proxy(("127.0.0.1", redis_server.port), "redis")
    yield proxy
    proxy.close()


def keeper_through(proxy: Proxy, ttl: float) -> LeaseKeeper:
    client = make_redis(f"redis://127.0.0.1:{proxy.port}/0")
    timeout = call_timeout([ttl], REDIS_SOCKET_TIMEOUT)
    keeper = LeaseKeeper(locks.register(bounded(client, timeout)), timeout=timeout)
    keeper.start()
    return keeper


def take(proxy: Proxy, job: str, ttl: float) -> Lease:
    scripts = locks.register(make_redis(f"redis://127.0.0.1:{proxy.port}/0"))
    owner = make_token(new_run_id(), SYSTEM.now())
    sent = time.monotonic()
    assert locks.acquire(scripts, job, owner, ttl, None)[0] is locks.Claim.OK
    return Lease(job, owner, ttl, CancelToken(), confirmed=sent)


@pytest.mark.parametrize("ttl", [1.5, 4.0])
def test_a_holder_cut_off_from_redis_cancels_its_run_by_the_deadline(proxy, redis_server, ttl):
    """After the cut no renewal gets an answer; the run is cancelled at (last renewal sent + TTL - margin),
    before Redis drops the key, not when a socket timeout (5 s) would have fired."""
    keeper = keeper_through(proxy, ttl)
    lease = keeper.hold(take(proxy, "job", ttl))
    try:
        time.sleep(ttl / 2)  # at least one renewal has succeeded
        assert lease.sent > lease.next_renew - ttl / 3 - 0.05 and not lease.lost
        last_renewal = lease.sent
        proxy.cut()
        assert lease.cancel.wait(ttl + 1), "the run was not cancelled"
        cancelled = time.monotonic()
        assert lease.lost and "deadline" in lease.cancel.reason
        expected = last_renewal + ttl - lease_margin(ttl)
        # The deadline of the last renewal sent before the cut, or of one sent just after it (still unanswered).
        assert expected - 0.05 <= cancelled <= expected + ttl / 3 + 0.1, (cancelled - last_renewal, ttl)
        assert cancelled < lease.expires
        assert redis_server.client().pttl("lock:job") > 0  # Redis still holds the key: the holder stopped first
    finally:
        proxy.heal()
        keeper.stop()


def test_a_heartbeat_that_hangs_never_delays_a_renewal(proxy, redis_server):
    """The heartbeat has a thread of its own (``Beats``): while it hangs, the lease is renewed on time for three
    TTLs."""
    hang = threading.Event()
    hanging = cast(Heartbeat, lambda: hang.wait(30))
    beats = Beats(hanging, 0.2)
    beats.start()
    keeper = keeper_through(proxy, 1.0)
    lease = keeper.hold(take(proxy, "job", 1.0))
    try:
        time.sleep(3.0)
        assert not lease.lost and not lease.cancel.cancelled
        assert redis_server.client().pttl("lock:job") > 500
    finally:
        hang.set()
        beats.stop()
        keeper.stop()


def test_a_lease_taken_away_is_cancelled_at_the_next_renewal(proxy, redis_server):
    keeper = keeper_through(proxy, 1.5)
    lease = keeper.hold(take(proxy, "job", 1.5))
    try:
        redis_server.client().delete("lock:job")  # the runbook's redis-cli DEL lock:NAME
        assert lease.cancel.wait(1.0)
        assert "gone or taken" in lease.cancel.reason
    finally:
        keeper.stop()


def test_the_keeper_stops_within_its_call_timeout_during_a_partition(proxy):
    ttl = 1.5
    keeper = keeper_through(proxy, ttl)
    keeper.hold(take(proxy, "job", ttl))
    proxy.cut()
    time.sleep(ttl / 3 + 0.1)  # a renewal is waiting for its answer
    started = time.monotonic()
    keeper.stop()
    # Each thread is joined for up to 2 s: a renewal blocked past its call timeout would show here.
    assert time.monotonic() - started <= call_timeout([ttl], REDIS_SOCKET_TIMEOUT) + 0.3
    proxy.heal()
