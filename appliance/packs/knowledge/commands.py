"""``appliance knowledge``: search the knowledge collection, reindex documents, show the indexer's state.

In embedded mode (no ``QDRANT_URL``) the Qdrant Edge storage admits one process at a time (a file lock):
these commands open it briefly, waiting up to ``QDRANT_LOCAL_WAIT`` for an indexer run of the worker to
finish and then naming the process that holds it; ``status`` never waits. ``reindex`` runs the indexer
itself under ``lock:knowledge-indexer``, so it never races the worker.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from typing import Any

import psycopg
from tqdm import tqdm

from appliance.config import Config
from appliance.packs.knowledge import documents
from appliance.packs.knowledge.status import knowledge_status
from appliance.sdk import (
    ApplianceError,
    ExitCode,
    Jobs,
    NotFound,
    config_or_exit,
    connect_db,
    fail,
    jobs_or_exit,
    one,
    print_json,
    run_once,
    setup_logs,
    use_metrics_dir,
)

JOB = "knowledge-indexer"
SNIPPET = 100


def register(sub: argparse._SubParsersAction) -> None:
    knowledge = sub.add_parser("knowledge", help="search the knowledge collection, reindex documents")
    ksub = knowledge.add_subparsers(dest="action", metavar="ACTION", required=True)

    search = ksub.add_parser("search", help="the documents of a tenant closest to a text",
                             description="the documents of a tenant closest to a text (best chunk of each)")
    search.add_argument("text", help="what to look for")
    search.add_argument("--tenant", help="tenant id or name (default: all tenants)")
    search.add_argument("--limit", type=_positive, default=5, help="documents to show (default 5)")
    search.add_argument("--json", action="store_true", help="print one JSON document")
    search.set_defaults(handler=search_command)

    reindex = ksub.add_parser("reindex", help="embed documents again (all, or one tenant's), with a progress bar",
                              description="mark documents as not indexed and run the indexer now, in the "
                                          "foreground, under lock:knowledge-indexer")
    reindex.add_argument("--tenant", help="tenant id or name (default: every document)")
    reindex.add_argument("--json", action="store_true", help="print one JSON document instead of a progress bar")
    reindex.set_defaults(handler=reindex_command)

    status = ksub.add_parser("status", help="embedder, Qdrant mode, and document counts")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(handler=status_command)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _tenant_id(config: Config, text: str | None) -> int | None:
    """None for all tenants; an id as given; a name looked up in PostgreSQL."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        with connect_db(config, autocommit=False) as conn:
            return documents.resolve_tenant(conn, text)
    except NotFound as exc:
        fail(str(exc), ExitCode.CONFIG)
    except psycopg.Error as exc:
        fail(f"PostgreSQL unavailable: {exc}")


def search_command(args: argparse.Namespace) -> int:
    config = config_or_exit()
    use_metrics_dir(config)
    tenant = _tenant_id(config, args.tenant)
    # numpy and the store's libraries, imported by this command only (every command builds the parser).
    from appliance.packs.knowledge.embedder import make_breaker, make_embedder
    from appliance.packs.knowledge.store import open_store

    embedder = make_embedder(config.knowledge, make_breaker(config.knowledge))
    try:
        with open_store(config) as store:
            if not store.exists():
                hits = []
                print(f"appliance: collection {store.collection} does not exist yet: nothing is indexed",
                      file=sys.stderr)
            else:
                store.check(embedder.identity)
                hits = store.search(embedder.embed([args.text])[0], tenant, args.limit)
            mode = store.mode
    except ApplianceError as exc:
        fail(str(exc))
    if args.json:
        print_json({"query": args.text, "tenant_id": tenant, "collection": config.knowledge.collection,
                    "qdrant": mode, "embedder": embedder.identity.describe(), "hits": [vars(h) for h in hits]})
        return 0
    for rank, hit in enumerate(hits, 1):
        print(f"{rank}. [{hit.score:.3f}] document {hit.document_id} (tenant {hit.tenant_id}): {hit.title}"
              + (f"  <{hit.source}>" if hit.source else ""))
        print(f"   chunk {hit.chunk_index}: {_snippet(hit.text)}")
    if not hits:
        print("no matching documents")
    return 0


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET else flat[:SNIPPET - 1] + "…"


def reindex_command(args: argparse.Namespace) -> int:
    config, jobs = jobs_or_exit()
    use_metrics_dir(config)
    setup_logs(config, "cli")
    tenant = _tenant_id(config, args.tenant)

    try:
        with connect_db(config, autocommit=False) as conn:
            marked = documents.reset(conn, tenant)
            total = documents.count_pending(conn)
    except psycopg.Error as exc:
        fail(f"PostgreSQL unavailable: {exc}")
    return _run_indexer(config, jobs, marked, total, tenant, args.json)


class PlainProgress:
    """The progress bar's stand-in when stderr is not a terminal (logs, pipes): one line per batch, no
    carriage returns."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def update(self, n: int) -> None:
        self.done += n
        print(f"reindex: {self.done}/{self.total} documents", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress(total: int, as_json: bool):
    """A tqdm bar on a terminal, plain lines otherwise, nothing with ``--json`` (all on stderr)."""

    if as_json or not sys.stderr.isatty():
        return tqdm(disable=True) if as_json else PlainProgress(total)
    return tqdm(total=total, unit="doc", desc="reindex", file=sys.stderr)


def _run_indexer(config: Config, jobs: Jobs, marked: int, total: int, tenant: int | None, as_json: bool) -> int:
    # The embedder's libraries, for this command only.
    from appliance.packs.knowledge.services import PROGRESS

    bar = _progress(total, as_json)
    try:
        run = run_once(config, jobs, JOB, reason="reindex", by=f"cli:{getpass.getuser()}@{socket.gethostname()}",
                       services={PROGRESS: bar.update})
    finally:
        bar.close()
    result: dict[str, Any] = {"marked": marked, "tenant_id": tenant, "outcome": run.outcome, "error": run.error}
    if not run.ran:
        print(f"appliance: {JOB} is running elsewhere (lock:{JOB} is held); the {marked} documents are marked "
              f"and that run or the next one indexes them", file=sys.stderr)
        code = ExitCode.BUSY
    else:
        code = ExitCode.OK if run.succeeded else ExitCode.FAILED
    if as_json:
        print_json(result)
    elif run.ran:
        print(f"reindex: {marked} documents marked; {run.outcome}" + (f" ({run.error})" if run.error else ""))
    return code


def status_command(args: argparse.Namespace) -> int:
    config = config_or_exit()
    status: dict[str, Any] = knowledge_status(config)
    status["documents"] = _document_counts(config)
    if not config.core.qdrant_url_set:
        from appliance.packs.knowledge.store import embedded_state  # as in search_command

        status["storage"] = embedded_state(config)
    if args.json:
        print_json(status)
        return 0
    for key, value in status.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key:<11} {value}")
    return 0


def _document_counts(config: Config) -> dict[str, Any]:

    try:
        with connect_db(config) as conn:
            row = one(conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE indexed_version = version),"
                " count(*) FILTER (WHERE failed_version = version),"
                " count(*) FILTER (WHERE indexed_version IS DISTINCT FROM version"
                "  AND failed_version IS DISTINCT FROM version),"
                " (SELECT count(*) FROM knowledge_deletions) FROM knowledge_documents"))
    except psycopg.Error as exc:
        return {"error": f"PostgreSQL unavailable: {type(exc).__name__}"}
    return dict(zip(("total", "indexed", "failed", "pending", "deletions_pending"), row, strict=True))
