#!/usr/bin/env python3
"""A STAND-IN for the Qdrant server binary, for tests only: no package registry here carries Qdrant.

It is started the way the appliance starts the real binary (``qdrant --config-path FILE``, with the
``QDRANT__SERVICE__HTTP_PORT`` / ``QDRANT__SERVICE__API_KEY`` overrides the real server reads) and answers
Qdrant's probe endpoints (``/readyz``, ``/healthz``, ``/livez``), ``/`` and ``/collections``.

For ``appliance backup`` it also speaks the collection snapshot API as Qdrant's API reference describes it
(create, list, download and delete a snapshot; ``snapshots/upload`` with ``priority`` and ``checksum``), over
collections whose whole content is an opaque blob kept in memory: ``PUT /collections/NAME`` stores the
request's body as that blob, a snapshot is a copy of it, an upload replaces it. It holds no points and
answers no search. SIGTERM stops it (exit 0), like the real server. Standard library only.
"""

from __future__ import annotations

import email
import hashlib
import json
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

API_KEY = os.environ.get("QDRANT__SERVICE__API_KEY", "")
PROBES = {"/readyz": "all shards are ready", "/healthz": "healthz check passed", "/livez": "healthz check passed"}
COLLECTION = re.compile(r"^/collections/([^/]+)(?:/snapshots(?:/(upload|[^/]+))?)?$")
#: collection name -> its content; (collection, snapshot name) -> the snapshot's content.
COLLECTIONS: dict[str, bytes] = {}
SNAPSHOTS: dict[tuple[str, str], bytes] = {}
GUARD = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in PROBES:
            self._send(200, PROBES[path].encode(), "text/plain")
        elif not self._authorized():
            return
        elif path == "/":
            self._json({"title": "qdrant stand-in for tests", "version": "0.0.0-standin"})
        elif path == "/collections":
            self._json({"result": {"collections": [{"name": n} for n in sorted(COLLECTIONS)]}, "status": "ok"})
        else:
            self._collection("GET")

    def do_PUT(self) -> None:
        if self._authorized():
            self._collection("PUT")

    def do_POST(self) -> None:
        if self._authorized():
            self._collection("POST")

    def do_DELETE(self) -> None:
        if self._authorized():
            self._collection("DELETE")

    def _authorized(self) -> bool:
        if API_KEY and self.headers.get("api-key") != API_KEY:
            self._send(401, b'{"status":{"error":"Must provide an API key"}}', "application/json")
            return False
        return True

    def _collection(self, method: str) -> None:
        url = urlsplit(self.path)
        found = COLLECTION.match(url.path)
        if found is None:
            self._send(404, b'{"status":{"error":"Not found"}}', "application/json")
            return
        name, snapshot = unquote(found.group(1)), unquote(found.group(2) or "")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with GUARD:
            if "/snapshots" not in url.path:
                self._whole(method, name, body)
            elif snapshot == "upload" and method == "POST":
                self._upload(name, body, query)
            else:
                self._snapshot(method, name, snapshot)

    def _whole(self, method: str, name: str, body: bytes) -> None:
        if method == "PUT":
            COLLECTIONS[name] = body
            self._json({"result": True, "status": "ok"})
        elif method == "GET" and name in COLLECTIONS:
            self._json({"result": {"status": "green", "points_count": 0}, "status": "ok"})
        else:
            self._send(404, b'{"status":{"error":"Collection not found"}}', "application/json")

    def _snapshot(self, method: str, name: str, snapshot: str) -> None:
        if name not in COLLECTIONS:
            self._send(404, b'{"status":{"error":"Collection not found"}}', "application/json")
        elif method == "POST" and not snapshot:
            data = COLLECTIONS[name]
            snapshot = f"{name}-{len(SNAPSHOTS) + 1}.snapshot"
            SNAPSHOTS[(name, snapshot)] = data
            self._json({"result": {"name": snapshot, "size": len(data),
                                   "checksum": hashlib.sha256(data).hexdigest()}, "status": "ok"})
        elif method == "GET" and not snapshot:
            self._json({"result": [{"name": s} for (c, s) in SNAPSHOTS if c == name], "status": "ok"})
        elif (name, snapshot) not in SNAPSHOTS:
            self._send(404, b'{"status":{"error":"Snapshot not found"}}', "application/json")
        elif method == "GET":
            self._send(200, SNAPSHOTS[(name, snapshot)], "application/octet-stream")
        elif method == "DELETE":
            del SNAPSHOTS[(name, snapshot)]
            self._json({"result": True, "status": "ok"})
        else:
            self._send(405, b'{"status":{"error":"Method not allowed"}}', "application/json")

    def _upload(self, name: str, body: bytes, query: dict[str, str]) -> None:
        form = email.message_from_bytes(b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n"
                                        + body)
        files = [part for part in form.walk() if part.get_param("name", header="content-disposition") == "snapshot"]
        if len(files) != 1 or query.get("priority") != "snapshot":
            self._send(400, b'{"status":{"error":"expected one snapshot file and priority=snapshot"}}',
                       "application/json")
            return
        data = files[0].get_payload(decode=True)
        assert isinstance(data, bytes), "a file part decodes to bytes"
        if "checksum" in query and hashlib.sha256(data).hexdigest() != query["checksum"]:
            self._send(400, b'{"status":{"error":"Snapshot checksum mismatch"}}', "application/json")
            return
        COLLECTIONS[name] = data
        self._json({"result": True, "status": "ok"})

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
