"""The knowledge collection on a Qdrant server, into and out of an ``appliance backup`` archive, through the
server's snapshot API (REST): create a snapshot, download it, delete it from the server again; on restore,
upload it (``priority=snapshot``: the archive is the truth), which replaces the collection or creates it.

The snapshot covers one collection on one node: the knowledge collection (``QDRANT_COLLECTION``) of the
server ``QDRANT_URL`` names. A clustered Qdrant needs its own backups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from appliance.config import Config
from appliance.sdk import ApplianceError, BackupRefused

#: The snapshot's file in the part.
SNAPSHOT_FILE = "collection.snapshot"
CHUNK = 1024 * 1024


def _client(config: Config, timeout: float | None = None) -> httpx.Client:
    key = config.core.qdrant_api_key
    return httpx.Client(base_url=config.core.qdrant_url.rstrip("/"), headers={"api-key": key} if key else {},
                        timeout=timeout or config.knowledge.qdrant_timeout)


def _collection(config: Config) -> str:
    return f"/collections/{quote(config.knowledge.collection, safe='')}"


def _where(config: Config) -> str:
    """The server without credentials, for the manifest."""
    parts = urlsplit(config.core.qdrant_url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def save(config: Config, directory: Path, consistent_point: Callable[[], None]) -> dict[str, Any]:
    consistent_point()
    info: dict[str, Any] = {"qdrant": "server", "server": _where(config), "collection": config.knowledge.collection}
    base = _collection(config)
    try:
        with _client(config) as http:
            if not _ok(http.get(f"{base}/exists"))["result"]["exists"]:
                return {**info, "snapshot": None}
            # Taking a snapshot reads the whole collection: it may well take longer than one request's timeout.
            created = _ok(http.post(f"{base}/snapshots", params={"wait": "true"}, timeout=None))["result"]
            name = created["name"]
            try:
                digest = _download(http, f"{base}/snapshots/{quote(name, safe='')}", directory / SNAPSHOT_FILE)
            finally:
                http.delete(f"{base}/snapshots/{quote(name, safe='')}", params={"wait": "true"})
    except httpx.HTTPError as exc:
        raise ApplianceError(f"Qdrant server {_where(config)}: {type(exc).__name__}: {exc}") from None
    if created.get("checksum") and created["checksum"] != digest:
        raise ApplianceError(f"Qdrant server {_where(config)}: the snapshot downloaded does not match its checksum")
    return {**info, "snapshot": SNAPSHOT_FILE, "sha256": digest}


def _download(http: httpx.Client, path: str, target: Path) -> str:
    digest = hashlib.sha256()
    with http.stream("GET", path, timeout=None) as answer:
        _ok(answer, read=False)
        with open(target, "xb") as out:
            for block in answer.iter_bytes(CHUNK):
                digest.update(block)
                out.write(block)
    return digest.hexdigest()


def _ok(answer: httpx.Response, read: bool = True) -> dict[str, Any]:
    if answer.status_code >= 400:
        answer.read()
        raise httpx.HTTPStatusError(f"{answer.request.method} {answer.request.url.path}: {answer.status_code} "
                                    f"{answer.text[:300]}", request=answer.request, response=answer)
    return answer.json() if read else {}


def check(config: Config, info: dict[str, Any]) -> None:
    """The server must answer before anything else is restored."""
    try:
        with _client(config) as http:
            _ok(http.get("/collections"))
    except httpx.HTTPError as exc:
        raise BackupRefused(f"the Qdrant server {_where(config)} does not answer ({type(exc).__name__}: {exc}); "
                            f"start it first") from None


def restore(config: Config, directory: Path, info: dict[str, Any]) -> list[str]:
    collection = config.knowledge.collection
    if not info.get("snapshot"):
        return [f"knowledge: the archive has no collection (it did not exist on the server); {collection} left as "
                f"it is"]
    path = directory / str(info["snapshot"])
    try:
        with _client(config) as http, open(path, "rb") as snapshot:
            _ok(http.post(f"{_collection(config)}/snapshots/upload",
                          params={"wait": "true", "priority": "snapshot", "checksum": info["sha256"]},
                          files={"snapshot": (f"{collection}.snapshot", snapshot)}, timeout=None))
    except httpx.HTTPError as exc:
        raise ApplianceError(f"Qdrant server {_where(config)}: the collection was not restored: "
                             f"{type(exc).__name__}: {exc}") from None
    return [f"knowledge: collection {collection} on {_where(config)} replaced by the archive's snapshot"]
