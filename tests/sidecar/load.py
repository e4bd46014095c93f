"""A small HTTP load generator (keep-alive connections, one per thread) for the probe-flood test and the
sidecar benchmark: either paced at a fixed total rate, or as fast as the server answers."""

from __future__ import annotations

import socket
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
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def merge(self, other: LoadResult) -> None:
        self.seconds = max(self.seconds, other.seconds)
        self.latencies += other.latencies
        self.errors += other.errors
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends a fixed GET and reads answers with ``Content-Length``.

    Far lighter than ``http.client`` (which parses headers with the email package), so the generator spends
    less of the shared CPU than the server it measures."""

    def __init__(self, host: str, port: int, path: str):
        self.address = (host, port)
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        self.sock: socket.socket | None = None
        self.buffer = b""

    def get(self) -> int:
        """Send the request and read the whole answer; returns its status code."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=5)
            self.buffer = b""
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._read()
        self.buffer = self.buffer[length:]
        return int(lines[0].split()[1])

    def _read(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _worker(url: str, interval: float | None, until: float, start: float, result: LoadResult,
            lock: threading.Lock) -> None:
    parts = urlsplit(url)
    conn = _Connection(parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/")
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
                status = conn.get()
            except (OSError, ValueError, IndexError):
                mine.errors += 1
                conn.close()
                continue
            mine.latencies.append(time.perf_counter() - t0)
            mine.statuses[status] = mine.statuses.get(status, 0) + 1
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
