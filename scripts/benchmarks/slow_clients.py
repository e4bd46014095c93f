"""Slow clients benchmark: the latency of ``/health`` while ten clients hold connections to the sidecar open
without finishing their request, against ``appliance sidecar`` (gunicorn, default settings) on this machine.

Each scenario starts a fresh sidecar, probes ``/health`` as an orchestrator does (a new connection per probe,
``Connection: close``, a 5 s timeout like the Deployment's readiness probe), first alone, then with ten clients
that each:

- ``body, admin``: send an authenticated admin change announcing a 1,000-byte body and send 10 bytes of it;
- ``body, stranger``: the same without a credential (answered 401 without reading the body);
- ``headers``: send half of a request's headers;
- ``silent``: connect and send nothing.

A client the server closes opens its next connection at once, so ten are open for the whole measurement.
A probe that gets no answer within 5 s counts as a timeout (and as 5 s in the percentiles).

    scripts/bench slow_clients [--seconds 15] [--rate 20] [--sidecar-threads N] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.services import PostgresServer, RedisServer
from tests.sidecar.cluster import ADMIN_TOKEN, Cluster
from tests.sidecar.processes import SidecarProcess, process_env

PROBE_TIMEOUT = 5.0
CLIENTS = 10
_AUTH = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
_POST = ("POST /api/jobs/tick/trigger HTTP/1.1\r\nHost: sidecar\r\n{auth}Content-Type: application/json\r\n"
         "Content-Length: 1000\r\n\r\n{{\"note\": ")
#: What each kind of slow client sends before it goes quiet.
SCENARIOS = {
    "body, admin": _POST.format(auth=_AUTH).encode(),
    "body, stranger": _POST.format(auth="").encode(),
    "headers": b"GET /health HTTP/1.1\r\nHost: sidecar\r\n",
    "silent": b"",
}


class SlowClients:
    """``count`` connections that each send ``opening`` and then nothing; reopened as soon as the server closes
    one. ``closed`` counts the server's closes."""

    def __init__(self, port: int, opening: bytes, count: int = CLIENTS):
        self.port, self.opening = port, opening
        self.closed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._hold, daemon=True) for _ in range(count)]

    def __enter__(self) -> SlowClients:
        for thread in self._threads:
            thread.start()
        time.sleep(0.2)  # every client connected and stalled before the first probe
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(3)

    def _hold(self) -> None:
        while not self._stop.is_set():
            with socket.create_connection(("127.0.0.1", self.port)) as sock:
                sock.sendall(self.opening)
                sock.settimeout(0.2)
                while not self._stop.is_set():
                    try:
                        if not sock.recv(65536):
                            self.closed += 1
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        self.closed += 1
                        break


def probe(port: int) -> tuple[float, int | None]:
    """One ``GET /health`` on a new connection: (seconds, status), status None when it got no answer in time."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
                if time.perf_counter() - t0 > PROBE_TIMEOUT:
                    raise TimeoutError
        return time.perf_counter() - t0, int(answer.split(b" ", 2)[1])
    except (OSError, IndexError, ValueError):
        return PROBE_TIMEOUT, None


def measure(port: int, seconds: float, rate: float) -> list[tuple[float, int | None]]:
    """Probes paced at ``rate`` per second for ``seconds``, each in its own thread (a stuck probe does not hold
    back the next one, as an orchestrator's would not)."""
    results: list[tuple[float, int | None]] = []
    threads = []
    start = time.perf_counter()
    for i in range(int(seconds * rate)):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        thread = threading.Thread(target=lambda: results.append(probe(port)), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(PROBE_TIMEOUT + 1)
    return results


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(label: str, results: list[tuple[float, int | None]], closed: int | None = None) -> None:
    seconds = [s for s, _ in results]
    timeouts = sum(1 for _, status in results if status is None)
    statuses = sorted({status for _, status in results if status is not None})
    line = (f"{label}: {len(results)} probes, p50 {percentile(seconds, 50) * 1000:.1f} ms, "
            f"p99 {percentile(seconds, 99) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms, "
            f"{timeouts} without an answer within {PROBE_TIMEOUT:g} s, statuses {statuses}")
    if closed is not None:
        line += f"; the server closed {closed} slow connections"
    print(line, flush=True)


def scenario(home: Path, redis_server: RedisServer, database_url: str, name: str, args: argparse.Namespace) -> None:
    home.mkdir(parents=True)
    env = process_env({"APPLIANCE_HOME": str(home), "REDIS_URL": redis_server.url, "DATABASE_URL": database_url,
                       "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "warning",
                       **({"SIDECAR_THREADS": str(args.sidecar_threads)} if args.sidecar_threads else {})})
    sidecar = SidecarProcess(env, home / "sidecar.log")
    try:
        sidecar.wait_ready()
        measure(sidecar.port, 1, args.rate)  # warm-up: imports, first checks
        report(f"{name}: alone", measure(sidecar.port, args.seconds / 3, args.rate))
        with SlowClients(sidecar.port, SCENARIOS[name]) as clients:
            results = measure(sidecar.port, args.seconds, args.rate)
        report(f"{name}: with {CLIENTS} slow clients", results, clients.closed)
    finally:
        sidecar.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=20.0, help="probes per second")
    parser.add_argument("--sidecar-threads", type=int, help="SIDECAR_THREADS (default: the setting's default)")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS), help=", ".join(SCENARIOS))
    args = parser.parse_args(argv)
    redis_server = RedisServer().start()
    postgres = PostgresServer().start()
    try:
        database_url = postgres.create_database("bench")
        with redis_server.client() as client:
            cluster = Cluster(client)
            cluster.publish("tick", schedule="1h", period=3600)
            cluster.run("tick")
            cluster.beat(jobs=["tick"], ttl=3600)
        with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
            for i, name in enumerate(args.scenarios):
                scenario(Path(tmp) / str(i), redis_server, database_url, name, args)
    finally:
        redis_server.cleanup()
        postgres.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
