"""The ``knowledge_documents`` table as the indexer sees it: its work list and its index state.

Every function runs its statements in its own transaction block on ``conn`` (a pool connection, not in
autocommit mode), so each returns with its work committed, except where a caller passes its own block.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from appliance.sdk import NotFound, one

_PENDING = "indexed_version IS DISTINCT FROM version AND failed_version IS DISTINCT FROM version"


@dataclass(frozen=True)
class Document:
    id: int
    tenant_id: int
    title: str
    body: str
    source: str | None
    updated_at: datetime
    deleted_at: datetime | None
    version: int


def count_pending(conn: psycopg.Connection, tenant_id: int | None = None) -> int:
    """Documents whose current version is not in Qdrant yet (and has not failed)."""
    where, params = _tenant(tenant_id)
    with conn.transaction():
        row = one(conn.execute(f"SELECT count(*) FROM knowledge_documents WHERE {_PENDING}{where}", params))
    return int(row[0])


def pending_batch(conn: psycopg.Connection, after_id: int, limit: int) -> list[Document]:
    """Up to ``limit`` pending documents with ids above ``after_id``, in id order."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, tenant_id, title, body, source, updated_at, deleted_at, version FROM knowledge_documents"
            f" WHERE {_PENDING} AND id > %s ORDER BY id LIMIT %s", (after_id, limit),
        ).fetchall()
    return [Document(*row) for row in rows]


def raise_high_water(conn: psycopg.Connection, chunks: dict[int, int]) -> dict[int, int]:
    """Record that up to ``chunks[id]`` points may exist for each document, before they are written.

    Returns, per document still in the table, the number of points that may exist now (the larger of the
    old and new counts); documents deleted meanwhile are absent and must not be written.
    """
    if not chunks:
        return {}
    ids, counts = list(chunks), list(chunks.values())
    with conn.transaction():
        rows = conn.execute(
            "UPDATE knowledge_documents d SET indexed_chunks = greatest(d.indexed_chunks, v.chunks)"
            " FROM unnest(%s::bigint[], %s::int[]) AS v(id, chunks) WHERE d.id = v.id"
            " RETURNING d.id, d.indexed_chunks", (ids, counts),
        ).fetchall()
    return {int(doc_id): int(n) for doc_id, n in rows}


def mark_indexed(conn: psycopg.Connection, done: list[tuple[int, int, int]]) -> None:
    """``done``: (id, version, chunks) written to Qdrant. Call inside the caller's transaction block."""
    if not done:
        return
    ids, versions, chunks = (list(column) for column in zip(*done, strict=True))
    conn.execute(
        "UPDATE knowledge_documents d SET indexed_version = v.version, indexed_chunks = v.chunks,"
        " indexed_at = now(), failed_version = NULL, index_error = NULL"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) AS v(id, version, chunks) WHERE d.id = v.id",
        (ids, versions, chunks),
    )


def mark_failed(conn: psycopg.Connection, failed: list[tuple[int, int, str]]) -> None:
    """``failed``: (id, version, reason); the version is skipped until the document changes or is reindexed.
    Call inside the caller's transaction block."""
    if not failed:
        return
    ids, versions, reasons = (list(column) for column in zip(*failed, strict=True))
    conn.execute(
        "UPDATE knowledge_documents d SET failed_version = v.version, index_error = v.reason"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(id, version, reason) WHERE d.id = v.id",
        (ids, versions, reasons),
    )


def deletions(conn: psycopg.Connection, limit: int) -> list[tuple[int, int]]:
    """(document id, points that may exist) of rows deleted from the table whose points are still in Qdrant."""
    with conn.transaction():
        rows = conn.execute("SELECT document_id, chunks FROM knowledge_deletions ORDER BY document_id LIMIT %s",
                            (limit,)).fetchall()
    return [(int(doc_id), int(n)) for doc_id, n in rows]


def forget_deletions(conn: psycopg.Connection, ids: list[int]) -> None:
    """Call inside the caller's transaction block, once the points are gone."""
    conn.execute("DELETE FROM knowledge_deletions WHERE document_id = ANY(%s::bigint[])", (ids,))


def count_deletions(conn: psycopg.Connection) -> int:
    with conn.transaction():
        return int(one(conn.execute("SELECT count(*) FROM knowledge_deletions"))[0])


def reset(conn: psycopg.Connection, tenant_id: int | None = None) -> int:
    """Mark documents (of one tenant, or all) as not indexed, failed ones included; returns how many.

    ``indexed_chunks`` stays: it still bounds the points to remove when a document shrinks.
    """
    where, params = _tenant(tenant_id)
    with conn.transaction():
        cur = conn.execute("UPDATE knowledge_documents SET indexed_version = NULL, failed_version = NULL,"
                           f" index_error = NULL WHERE true{where}", params)
    return cur.rowcount


def resolve_tenant(conn: psycopg.Connection, text: str) -> int:
    """A tenant given by id or by exact name; raises ``NotFound`` when there is none or the name is ambiguous."""
    with conn.transaction():
        if text.isdigit():
            rows = conn.execute("SELECT id FROM tenants WHERE id = %s", (int(text),)).fetchall()
        else:
            rows = conn.execute("SELECT id FROM tenants WHERE name = %s ORDER BY id LIMIT 5", (text,)).fetchall()
    if not rows:
        raise NotFound(f"no tenant with id or name {text!r}")
    if len(rows) > 1:
        raise NotFound(f"several tenants are named {text!r} (ids {', '.join(str(r[0]) for r in rows)}): give the id")
    return int(rows[0][0])


def _tenant(tenant_id: int | None) -> tuple[str, tuple]:
    return ("", ()) if tenant_id is None else (" AND tenant_id = %s", (tenant_id,))
