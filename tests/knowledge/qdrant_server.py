"""A local HTTP server speaking the part of Qdrant's REST API that the snapshot job uses (no Qdrant server
binary exists here): ``GET /collections/{c}/exists``, and create, list and delete of
``/collections/{c}/snapshots`` (seed 004's ``POST /collections/bharat_crm_knowledge/snapshots``). Snapshots
live in memory; each new one is a second newer than the previous, so "newest" is well defined."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.local_http import JsonHandler, LocalServer

_SNAPSHOTS = re.compile(r"^/collections/([^/]+)/snapshots(?:/([^/]+))?$")
_EXISTS = re.compile(r"^/collections/([^/]+)/exists$")


class QdrantSnapshotServer(LocalServer):
    def __init__(self, collections: set[str]) -> None:
        self.collections = collections
        self.snapshots: dict[str, list[dict]] = {name: [] for name in collections}
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                self._answer(server.get(self.path.split("?")[0]))

            def do_POST(self) -> None:
                self.read_json()
                self._answer(server.create(self.path.split("?")[0]))

            def do_DELETE(self) -> None:
                self._answer(server.delete(self.path.split("?")[0]))

            def _answer(self, reply: tuple[int, object]) -> None:
                status, result = reply
                if status == 200:
                    self.send_json(status, {"result": result, "status": "ok", "time": 0.0})
                else:
                    self.send_json(status, {"status": {"error": str(result)}, "time": 0.0})

        super().__init__(Handler, "qdrant-server")

    @property
    def url(self) -> str:
        return self.origin

    def get(self, path: str) -> tuple[int, object]:
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
        snapshot = {"name": f"{match[1]}-{self._clock:%Y-%m-%d-%H-%M-%S}.snapshot",
                    "creation_time": self._clock.strftime("%Y-%m-%dT%H:%M:%S"), "size": 1024, "checksum": None}
        self.snapshots[match[1]].append(snapshot)
        return 200, snapshot

    def delete(self, path: str) -> tuple[int, object]:
        match = _SNAPSHOTS.match(path)
        if not match or not match[2] or match[1] not in self.collections:
            return 404, f"not found: {path}"
        kept = [s for s in self.snapshots[match[1]] if s["name"] != match[2]]
        if len(kept) == len(self.snapshots[match[1]]):
            return 404, f"snapshot {match[2]} not found"
        self.snapshots[match[1]] = kept
        return 200, True
