"""What the local HTTP servers of the tests share (OpenAI, Qdrant and provider stand-ins): a threaded
loopback server and JSON answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (as the clients use it), silent, answering JSON."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; on a kept-alive connection Nagle's algorithm would hold the body
    # until the client's delayed ACK, adding 40 ms to every request.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def read_json(self) -> Any:
        length = int(self.headers.get("content-length", 0))
        return json.loads(self.rfile.read(length)) if length else None

    def send_json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class LocalServer:
    """``handler`` served on a loopback port (a free one unless given) from a daemon thread, between ``start()``
    and ``stop()``."""

    def __init__(self, handler: Callable[..., BaseHTTPRequestHandler], name: str, port: int = 0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=name, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
