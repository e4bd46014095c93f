"""What the scheduling benchmarks run: each run records how late its body started after its slot.

``record`` is an appliance job (``APPLIANCE_JOBS_FILE`` names ``scripts.benchmarks.lag_jobs:record``);
``aps_main`` runs the same jobs with APScheduler 3 and a redis-py ``Lock`` around each run, in its own process,
against the same Redis: what a user would pick instead of the appliance.
"""

from __future__ import annotations

import math
import sys
import time

LAGS = "bench:lag:{}"
#: ``job slot lag`` of every run, for benchmarks that also count the slots that did not run.
SLOTS = "bench:slots:{}"


def record(ctx) -> None:
    lag = time.time() - ctx.slot.timestamp()
    ctx.redis.rpush(LAGS.format("appliance"), lag)


def record_slot(ctx) -> None:
    slot = ctx.slot.timestamp()
    ctx.redis.rpush(SLOTS.format("appliance"), f"{ctx.job} {slot:.0f} {time.time() - slot}")


def aps_main(redis_url: str, jobs: int, seconds: float, period: int = 0) -> None:
    """``period`` 0: ``jobs`` jobs every second, lags to ``LAGS``; 60: once a minute at :00, and every second
    with ``period`` 1, each run's ``job slot lag`` to ``SLOTS`` (the slot is the period's start)."""
    import redis
    from apscheduler.schedulers.background import BackgroundScheduler

    # A connection per job's thread: redis-py's default pool (100) fails the 101st concurrent run.
    client = redis.Redis.from_url(redis_url, max_connections=max(100, jobs + 16))

    def run(name: str) -> None:
        lock = client.lock(f"lock:{name}", timeout=60)
        if not lock.acquire(blocking=False):
            return
        try:
            now = time.time()
            if period:
                slot = math.floor(now / period) * period
                client.rpush(SLOTS.format("apscheduler"), f"{name} {slot} {now - slot}")
            else:
                client.rpush(LAGS.format("apscheduler"), now - math.floor(now))  # slots are whole seconds
        finally:
            lock.release()

    scheduler = BackgroundScheduler(job_defaults={"misfire_grace_time": 1, "coalesce": True},
                                    executors={"default": {"type": "threadpool", "max_workers": max(10, jobs)}})
    for i in range(jobs):
        scheduler.add_job(run, "cron", second="0" if period == 60 else "*", args=[f"aps{i}"], id=f"aps{i}")
    scheduler.start()
    time.sleep(seconds)
    scheduler.shutdown(wait=True)


if __name__ == "__main__":
    aps_main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
