"""What a slow or silent client may cost the sidecar: gunicorn's ``gthread`` worker with every wait for a client
bounded, so that clients which stall mid-request cannot keep ``/health`` from being answered.

The gthread worker serves each request in a thread of a small pool (``SIDECAR_WORKERS`` x ``SIDECAR_THREADS``,
8 by default), and as released it:

- reads a request's headers and body with no timeout: a client that sends half of either holds its thread
  until it goes away (an admin change reads its body; ``/health`` then never answers once every thread is
  held, measured in docs/performance.md "Slow clients");
- waits in a thread up to 5 s for the first byte of a new connection, and up to 5 s for the rest of a body the
  application did not read (a 401 to a stranger's POST) before it reuses the connection, and answers a second
  time (an HTML 400) when that rest is malformed chunked encoding;
- closes a connection by lingering up to 2 s for the client to stop sending, on the worker's main loop, which
  meanwhile accepts and dispatches no other connection of the process.

Here a thread waits for the client at most ``CLIENT_TIMEOUT`` between two of its packets (headers, body, the
answer going out), a new connection's first byte ``FIRST_BYTE_WAIT`` before the connection goes back to the
poller (where waiting costs no thread), the rest of an unread body ``UNREAD_BODY_WAIT`` (malformed, it closes
the connection after the one answer), and a close never waits. A body that stops arriving surfaces in the
application as ``TimeoutError`` (``appliance.sidecar.body`` answers 408).

These override parts of ``gunicorn.workers.gthread`` (the version pinned by the lock files):
``tests/sidecar/test_slow_clients.py`` holds them to what they are for through a real gunicorn.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from gunicorn.http.errors import ParseException
from gunicorn.workers import gthread

from appliance.kernel.runtime.clock import SYSTEM

#: The longest a thread waits for the next bytes of a request, or for a client to take the answer. Clients of
#: the sidecar (probes, Prometheus, an operator's curl, the dashboard) send a request in one go: 2 s of silence
#: in the middle of one is a stalled client, not a slow network (TCP's first retransmission comes after 1 s).
CLIENT_TIMEOUT = 2.0
#: How long a thread waits for the first byte of a new connection before handing it back to the poller (the
#: connection stays open: its request is served when it arrives).
FIRST_BYTE_WAIT = 0.5
#: How long the rest of a body the application did not read is awaited so that the connection can be reused;
#: past this it is closed (the client opens another: the sidecar's clients hardly reuse connections anyway).
UNREAD_BODY_WAIT = 0.1
#: What a close reads away of bytes the client already sent: closing with unread bytes makes the kernel send
#: a reset, which may destroy the answer before the client has read it.
CLOSE_DRAIN_BYTES = 64 * 1024


class BoundedConnection(gthread.TConn):
    """A client connection whose every wait in a thread is bounded."""

    def wait_for_data(self, timeout: float | None) -> bool:
        return bool(super().wait_for_data(FIRST_BYTE_WAIT if timeout is None else min(timeout, FIRST_BYTE_WAIT)))

    def init(self) -> None:
        # gunicorn makes the socket blocking (no timeout) before each request it serves, then calls init().
        super().init()
        self.sock.settimeout(CLIENT_TIMEOUT)

    def close(self, graceful: bool = False) -> None:
        if graceful:
            close_without_waiting(self.sock)
        else:
            super().close()


def close_without_waiting(sock: socket.socket) -> None:
    """Half-close ``sock`` (the answer is followed by FIN), read away what the client has already sent, close.
    gunicorn lingers until the client stops sending instead, on the worker's main loop."""
    try:
        sock.setblocking(False)
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < CLOSE_DRAIN_BYTES:
            data = sock.recv(CLOSE_DRAIN_BYTES)
            if not data:
                break
            drained += len(data)
    except OSError:
        pass  # nothing more has arrived (EAGAIN), or the client is gone
    finally:
        sock.close()


class BoundedThreadWorker(gthread.ThreadWorker):
    """gunicorn's ``gthread`` worker serving ``BoundedConnection``s (``worker_class`` of ``appliance sidecar``)."""

    def accept(self, listener: socket.socket) -> None:
        # ThreadWorker.accept with BoundedConnection in place of TConn.
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock.setblocking(True)
        self.enqueue_req(BoundedConnection(self.cfg, client_sock, client_addr, listener.getsockname()))

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        # gunicorn drains an unread body for up to 5 s in the thread before it reuses the connection; and when
        # that body is malformed (chunked), it sends a second answer, an HTML 400, after the application's.
        if not keepalive:
            return False
        try:
            return bool(conn.parser.finish_body(deadline=SYSTEM.monotonic() + UNREAD_BODY_WAIT))
        except (ParseException, OSError):
            return False  # the answer is out; where a next request would start is unknown: close
