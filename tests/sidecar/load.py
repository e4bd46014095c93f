"""A small HTTP load generator (keep-alive connections, one per thread) for the probe-flood test and the
sidecar benchmark: either paced at a fixed total rate, or as fast as the server answers."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """What one load run saw: request count, per-status counts, latencies (s) and wall time (s)."""

    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    def merge(self, other: "LoadResult") -> None:
        self.seconds = max(self.seconds, other.seconds)
        self.latencies += other.latencies
        self.errors += other.errors
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n


def _worker(url: str, interval: float | None, until: float, start: float, result: LoadResult,
            lock: threading.Lock) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    path = parts.path or "/"
    mine = LoadResult()
    due = start
    try:
        while True:
            if interval is not None:
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                due += interval
            t0 = time.perf_counter()
            if t0 >= until:
                break
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                mine.errors += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
                continue
            mine.latencies.append(time.perf_counter() - t0)
            mine.statuses[response.status] = mine.statuses.get(response.status, 0) + 1
    finally:
        conn.close()
    with lock:
        result.merge(mine)


def run_load(url: str, seconds: float, threads: int, rate: float | None = None) -> LoadResult:
    """GET ``url`` from ``threads`` threads for ``seconds``: ``rate`` requests/s in total, or unpaced."""
    result, lock = LoadResult(), threading.Lock()
    start = time.perf_counter()
    until = start + seconds
    interval = threads / rate if rate else None
    pool = [threading.Thread(target=_worker, args=(url, interval, until, start + i * (interval or 0) / threads,
                                                   result, lock))
            for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result.seconds = time.perf_counter() - start
    return result
