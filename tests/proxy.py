"""A TCP proxy the tests control, between a worker and Redis or PostgreSQL: a network partition as production
has them, where connections stay open and no byte moves.

``cut()`` stops moving bytes both ways on every connection, open or opened later (a new connection is accepted
by the kernel, as a SYN through a dead link would not be, but nothing it sends reaches the server and nothing
comes back): the client's socket timeouts and TCP keepalives see a healthy peer, so only the application's own
deadlines can notice. ``heal()`` moves the bytes that waited. ``reset()`` closes every connection (a peer that
restarted). Runs in threads of the test process.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit


class Proxy:
    """Listens on ``127.0.0.1:port`` and forwards each connection to ``upstream`` (``(host, port)`` or the
    path of a unix socket)."""

    def __init__(self, upstream: tuple[str, int] | Path, name: str = "proxy") -> None:
        self.upstream = upstream
        self.name = name
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._moving = threading.Event()
        self._moving.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.cuts: list[tuple[float, float | None]] = []  # (monotonic cut, monotonic heal) of each partition
        threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True).start()

    # -- what tests call --------------------------------------------------------------------------------
    @property
    def cut_now(self) -> bool:
        return not self._moving.is_set()

    def cut(self) -> float:
        """Stop moving bytes; returns the monotonic time of the cut."""
        at = time.monotonic()
        self._moving.clear()
        self.cuts.append((at, None))
        return at

    def heal(self) -> float:
        at = time.monotonic()
        if self.cuts and self.cuts[-1][1] is None:
            self.cuts[-1] = (self.cuts[-1][0], at)
        self._moving.set()
        return at

    def reset(self) -> None:
        """Close every connection (both sides see the connection end)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stopped.set()
        self._moving.set()
        self.reset()
        with contextlib.suppress(OSError):
            self._listener.close()

    # -- the forwarding ---------------------------------------------------------------------------------
    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, Path):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self.upstream))
            return sock
        return socket.create_connection(self.upstream)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name=f"{self.name}-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        # A connection opened during a partition reaches the server only when it heals.
        while not self._moving.wait(0.05):
            if self._stopped.is_set():
                client.close()
                return
        try:
            server = self._connect_upstream()
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs.append((client, server))
        other = {client: server, server: client}
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ)
            sel.register(server, selectors.EVENT_READ)
            try:
                while not self._stopped.is_set():
                    if not self._moving.wait(0.05):
                        continue
                    for key, _ in sel.select(0.05):
                        if not self._moving.is_set():
                            break  # cut while waiting: what arrived stays in the kernel's buffers
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        data = sock.recv(65536)
                        if not data:
                            return
                        other[sock].sendall(data)
            except OSError:
                return
            finally:
                for sock in (client, server):
                    with contextlib.suppress(OSError):
                        sock.close()
                with self._lock, contextlib.suppress(ValueError):
                    self._pairs.remove((client, server))


def through(url: str, proxy: Proxy) -> str:
    """A PostgreSQL or Redis ``url`` with its server replaced by the proxy's TCP port (a unix socket's ``host``
    and ``port`` query parameters dropped; user, database, passfile kept)."""
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items() if key not in ("host", "port")}
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))
