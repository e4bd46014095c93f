#!/usr/bin/env python3
"""A STAND-IN for the Qdrant server binary, for tests only: no package registry here carries Qdrant.

It is started the way the appliance starts the real binary (``qdrant --config-path FILE``, with the
``QDRANT__SERVICE__HTTP_PORT`` / ``QDRANT__SERVICE__API_KEY`` overrides the real server reads) and answers
Qdrant's probe endpoints (``/readyz``, ``/healthz``, ``/livez``), ``/`` and an empty ``/collections``.
It stores nothing. SIGTERM stops it (exit 0), like the real server. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = os.environ.get("QDRANT__SERVICE__API_KEY", "")
PROBES = {"/readyz": "all shards are ready", "/healthz": "healthz check passed", "/livez": "healthz check passed"}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in PROBES:
            self._send(200, PROBES[path].encode(), "text/plain")
        elif API_KEY and self.headers.get("api-key") != API_KEY:
            self._send(401, b'{"status":{"error":"Must provide an API key"}}', "application/json")
        elif path == "/":
            self._json({"title": "qdrant stand-in for tests", "version": "0.0.0-standin"})
        elif path == "/collections":
            self._json({"result": {"collections": []}, "status": "ok", "time": 0.0})
        else:
            self._send(404, b'{"status":{"error":"Not found"}}', "application/json")

    def _json(self, doc: dict) -> None:
        self._send(200, json.dumps(doc).encode(), "application/json")

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        print(f"qdrant-standin: {format % args}", flush=True)


def main(argv: list[str]) -> int:
    if "--config-path" not in argv or not os.path.isfile(argv[argv.index("--config-path") + 1]):
        print("qdrant-standin: --config-path FILE is required and must exist", file=sys.stderr)
        return 1
    port = int(os.environ.get("QDRANT__SERVICE__HTTP_PORT", "6333"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"qdrant-standin: serving on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    server.server_close()
    print("qdrant-standin: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
