"""The real gunicorn sidecar and clients that stall mid-request (appliance.sidecar.slow_clients): more of them than
the sidecar has threads, yet ``/health`` is answered, each of them gets its answer (or its connection closed)
once ``CLIENT_TIMEOUT`` passes without a byte (then the connection is closed: where a next request would start is
unknown), and what reaches the application is a JSON error, never a 500.

The sidecar runs one gunicorn process of four threads here, so ten stalled clients outnumber its threads: the
test is of every wait being bounded, not of the default pool being large. The bounds on ``/health`` are far
above what the sidecar needs (a few times ``CLIENT_TIMEOUT``) and far below "never": before, a stalled client
held its thread until it went away.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from appliance.sidecar.slow_clients import CLIENT_TIMEOUT
from tests.sidecar.cluster import ADMIN_TOKEN
from tests.sidecar.processes import SidecarProcess, process_env

pytestmark = pytest.mark.process

STALLED = 10
#: Long enough for ten stalled clients to be dealt with four at a time; short of gunicorn's worker timeout (30 s).
HEALTH_BOUND = 15.0
AUTH = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
HALF_A_BODY = ("POST /api/jobs/tick/trigger HTTP/1.1\r\nHost: sidecar\r\n" + AUTH +
               "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"note\": ").encode()
HALF_THE_HEADERS = b"GET /health HTTP/1.1\r\nHost: sidecar\r\n"


@pytest.fixture
def sidecar(tmp_path, sidecar_env, cluster):
    cluster.publish("tick")
    cluster.run("tick")
    cluster.beat(jobs=["tick"])
    process = SidecarProcess(process_env(sidecar_env, SIDECAR_WORKERS="1", SIDECAR_THREADS="4"),
                             tmp_path / "sidecar.log")
    yield process.wait_ready()
    process.stop()


def stall(port: int, opening: bytes, count: int = STALLED) -> list[socket.socket]:
    """``count`` connections that send ``opening`` and then nothing."""
    clients = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(opening)
        clients.append(sock)
    return clients


def answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends on ``sock`` before it closes it; fails if it keeps it open past ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the sidecar kept a stalled connection open for {timeout} s, having sent {data[:100]!r}")
    finally:
        sock.close()
    return data


def body_of(response: bytes) -> dict:
    return json.loads(response.partition(b"\r\n\r\n")[2])


def test_health_answers_while_ten_clients_hold_half_sent_bodies_and_each_gets_408(sidecar, cluster):
    clients = stall(sidecar.port, HALF_A_BODY)
    t0 = time.monotonic()
    health = httpx.get(sidecar.url + "/health", timeout=HEALTH_BOUND)
    assert health.status_code == 200, health.text
    answers = [answer(sock, HEALTH_BOUND) for sock in clients]
    elapsed = time.monotonic() - t0
    for response in answers:
        assert response.startswith(b"HTTP/1.1 408 "), response[:200]
        assert body_of(response) == {"error": "request_timeout", "status": 408,
                                     "message": f"the body stopped arriving: nothing came for {CLIENT_TIMEOUT:g} s"}
    assert elapsed < HEALTH_BOUND
    assert cluster.state.triggers.pending("tick") == 0, "no change was made on half a body"


def test_health_answers_while_ten_clients_hold_half_sent_headers_and_each_is_closed(sidecar):
    clients = stall(sidecar.port, HALF_THE_HEADERS)
    health = httpx.get(sidecar.url + "/health", timeout=HEALTH_BOUND)
    assert health.status_code == 200, health.text
    assert [answer(sock, HEALTH_BOUND) for sock in clients] == [b""] * STALLED, "closed without an answer"
    sidecar.stop()
    log = sidecar.log_path.read_text()
    assert log.count("closed a connection whose client stalled mid-request") == STALLED
    assert "Traceback" not in log and '"error"' not in log, "one line each, not a traceback"


def test_a_chunked_body_that_stalls_is_408_and_a_malformed_one_is_400(sidecar, cluster):
    head = ("POST /api/jobs/tick/trigger HTTP/1.1\r\nHost: sidecar\r\n" + AUTH +
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    (stalled,) = stall(sidecar.port, head + b"10\r\n{\"note\": ", count=1)
    (malformed,) = stall(sidecar.port, head + b"zz\r\n{}\r\n0\r\n\r\n", count=1)
    (cut_short,) = stall(sidecar.port, head + b"2\r\n{}\r\n", count=1)
    cut_short.shutdown(socket.SHUT_WR)
    stalled_answer, malformed_answer = answer(stalled, HEALTH_BOUND), answer(malformed, HEALTH_BOUND)
    answer(cut_short, HEALTH_BOUND)  # nobody reads its answer; it must not be a 500 in the log either
    assert stalled_answer.startswith(b"HTTP/1.1 408 "), stalled_answer[:200]
    assert body_of(stalled_answer)["error"] == "request_timeout"
    assert malformed_answer.startswith(b"HTTP/1.1 400 "), malformed_answer[:200]
    assert body_of(malformed_answer) == {"error": "bad_request", "status": 400,
                                         "message": "the chunked body is malformed or cut short (InvalidChunkSize)"}
    assert cluster.state.triggers.pending("tick") == 0
    sidecar.stop()
    log = sidecar.log_path.read_text()
    assert "unhandled error" not in log and "Traceback" not in log


@pytest.mark.parametrize("path", ["/health", "/api/jobs/tick/trigger"])
def test_a_malformed_chunked_body_a_route_does_not_read_gets_one_json_answer(sidecar, path):
    """405 (no body on /health) and 401 (no credential) answer before the body is read; gunicorn then read the
    body to reuse the connection, and sent a second answer, HTML, for its malformed chunks."""
    (client,) = stall(sidecar.port, f"POST {path} HTTP/1.1\r\nHost: sidecar\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    "zz\r\n{}\r\n0\r\n\r\n".encode(), count=1)
    response = answer(client, HEALTH_BOUND)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] in (b"405", b"401"), response[:200]
    assert response.count(b"HTTP/1.1 ") == 1, response
    assert json.loads(body)["status"] in (405, 401)
