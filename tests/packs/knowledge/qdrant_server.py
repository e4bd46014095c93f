#!/usr/bin/env python3
"""A local HTTP server speaking the part of Qdrant's REST API that the snapshot job and ``appliance backup``
use (no Qdrant server binary exists here): ``GET /collections`` and ``/collections/{c}/exists``; create, list,
download and delete of ``/collections/{c}/snapshots`` (seed 004's ``POST
/collections/bharat_crm_knowledge/snapshots``); and ``POST /collections/{c}/snapshots/upload`` (multipart,
``priority``, ``checksum``), as Qdrant's API reference describes them.

A collection's content is an opaque blob (``contents``): a snapshot is a copy of it, an upload replaces it.
Everything lives in memory (with ``storage``, uploads are also written there as ``NAME.blob``); each new
snapshot is a second newer than the previous, so "newest" is well defined. With ``api_key``, every request must
carry it in the ``api-key`` header.

Run as a program, it stands in for the bundled Qdrant binary (``QDRANT_BIN``): ``--config-path FILE``, with its
port, API key and storage in the ``QDRANT__*`` variables the appliance gives the real server; the collections
are the storage's ``*.blob`` files. SIGTERM stops it."""

from __future__ import annotations

import email
import hashlib
import os
import re
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tests.local_http import JsonHandler, LocalServer

_SNAPSHOTS = re.compile(r"^/collections/([^/]+)/snapshots(?:/([^/]+))?$")
_EXISTS = re.compile(r"^/collections/([^/]+)/exists$")
_UPLOAD = re.compile(r"^/collections/([^/]+)/snapshots/upload$")


class _Handler(JsonHandler):
    """Requests of one ``QdrantSnapshotServer`` (``qdrant``), which answers them."""

    qdrant: QdrantSnapshotServer
    api_key: str

    def do_GET(self) -> None:
        path = unquote(self.path.split("?")[0])
        if path == "/readyz" or self._allowed():  # Qdrant's probes need no API key
            self._serve_get(path)

    def do_POST(self) -> None:
        if not self._allowed():
            return
        url = urlsplit(self.path)
        if match := _UPLOAD.match(url.path):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            self._answer(self.qdrant.upload(unquote(match[1]), self.headers["content-type"], body, query))
            return
        self.read_json()
        self._answer(self.qdrant.create(unquote(url.path)))

    def do_DELETE(self) -> None:
        if self._allowed():
            self._answer(self.qdrant.delete(unquote(self.path.split("?")[0])))

    def _allowed(self) -> bool:
        if self.api_key and self.headers.get("api-key") != self.api_key:
            self._answer((401, "Must provide an API key"))
            return False
        return True

    def _serve_get(self, path: str) -> None:
        match = _SNAPSHOTS.match(path)
        if match and match[2] in self.qdrant.snapshot_data:
            data = self.qdrant.snapshot_data[match[2]]
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._answer(self.qdrant.get(path))

    def _answer(self, reply: tuple[int, object]) -> None:
        status, result = reply
        if status == 200:
            self.send_json(status, {"result": result, "status": "ok", "time": 0.0})
        else:
            self.send_json(status, {"status": {"error": str(result)}, "time": 0.0})


class QdrantSnapshotServer(LocalServer):
    def __init__(self, collections: set[str], contents: dict[str, bytes] | None = None, api_key: str = "",
                 port: int = 0, storage: Path | None = None) -> None:
        self.storage = storage
        self.collections = collections
        self.contents = {name: (contents or {}).get(name, f"points of {name}".encode()) for name in collections}
        self.snapshots: dict[str, list[dict]] = {name: [] for name in collections}
        self.snapshot_data: dict[str, bytes] = {}
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        Handler = type("Handler", (_Handler,), {"qdrant": self, "api_key": api_key})
        super().__init__(Handler, "qdrant-server", port)

    @property
    def url(self) -> str:
        return self.origin

    def get(self, path: str) -> tuple[int, object]:
        if path == "/readyz":
            return 200, "all shards are ready"
        if path == "/collections":
            return 200, {"collections": [{"name": name} for name in sorted(self.collections)]}
        if match := _EXISTS.match(path):
            return 200, {"exists": match[1] in self.collections}
        match = _SNAPSHOTS.match(path)
        if match and not match[2] and match[1] in self.collections:
            return 200, self.snapshots[match[1]]
        return 404, f"not found: {path}"

    def create(self, path: str) -> tuple[int, object]:
        match = _SNAPSHOTS.match(path)
        if not match or match[2] or match[1] not in self.collections:
            return 404, f"not found: {path}"
        self._clock += timedelta(seconds=1)
        data = self.contents[match[1]]
        name = f"{match[1]}-{self._clock:%Y-%m-%d-%H-%M-%S}.snapshot"
        snapshot = {"name": name,
                    "creation_time": self._clock.strftime("%Y-%m-%dT%H:%M:%S"), "size": len(data),
                    "checksum": hashlib.sha256(data).hexdigest()}
        self.snapshots[match[1]].append(snapshot)
        self.snapshot_data[name] = data
        return 200, snapshot

    def upload(self, collection: str, content_type: str, body: bytes, query: dict[str, str]) -> tuple[int, object]:
        """Recover ``collection`` from the multipart form's ``snapshot`` file (created when missing)."""
        form = email.message_from_bytes(f"content-type: {content_type}\r\n\r\n".encode() + body)
        files = [part for part in form.walk() if part.get_param("name", header="content-disposition") == "snapshot"]
        if len(files) != 1 or query.get("priority") != "snapshot":
            return 400, "expected one snapshot file and priority=snapshot"
        data = files[0].get_payload(decode=True)
        assert isinstance(data, bytes), "a file part decodes to bytes"
        if "checksum" in query and hashlib.sha256(data).hexdigest() != query["checksum"]:
            return 400, "Snapshot checksum mismatch"
        self.collections.add(collection)
        self.snapshots.setdefault(collection, [])
        self.contents[collection] = data
        if self.storage is not None:
            (self.storage / f"{collection}.blob").write_bytes(data)
        return 200, True

    def delete(self, path: str) -> tuple[int, object]:
        match = _SNAPSHOTS.match(path)
        if not match or not match[2] or match[1] not in self.collections:
            return 404, f"not found: {path}"
        kept = [s for s in self.snapshots[match[1]] if s["name"] != match[2]]
        if len(kept) == len(self.snapshots[match[1]]):
            return 404, f"snapshot {match[2]} not found"
        self.snapshots[match[1]] = kept
        self.snapshot_data.pop(match[2], None)
        return 200, True


def main(argv: list[str]) -> int:
    if "--config-path" not in argv or not os.path.isfile(argv[argv.index("--config-path") + 1]):
        print("qdrant_server: --config-path FILE is required and must exist", file=sys.stderr)
        return 1
    storage = Path(os.environ["QDRANT__STORAGE__STORAGE_PATH"])
    contents = {path.stem: path.read_bytes() for path in storage.glob("*.blob")}
    server = QdrantSnapshotServer(set(contents), contents, os.environ.get("QDRANT__SERVICE__API_KEY", ""),
                                  int(os.environ["QDRANT__SERVICE__HTTP_PORT"]), storage)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown).start())
    server.httpd.serve_forever()
    server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
