"""``appliance audit-log``: who changed what (the audit log in PostgreSQL, ``appliance.kernel.protocol.audit_log``).

Not ``appliance audit``, which proves the slot ledger's promises: this lists operator actions (pause, resume,
trigger, backfill, lock clear, dead-letter retry and drop, a job's spec changing) with actor, time, reason and
the state before and after, newest first.
"""

from __future__ import annotations

import argparse
import json

from appliance.kernel.protocol import audit_log
from appliance.kernel.protocol.audit import shared_now
from appliance.kernel.runtime.clients import connect_db
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail, print_json
from appliance.kernel.runtime.startup import config_or_exit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("audit-log", help="who changed what: pauses, resumes, triggers, backfills, lock "
                                              "clears, dead-letter actions, job spec changes (newest first)")
    parser.add_argument("--since", default="7d", help="a duration ago (30m, 24h, 7d) or an ISO time (default 7d)")
    parser.add_argument("--job", help="only the actions on this job (or dead letter id, or * for every job)")
    parser.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run_audit_log)


def run_audit_log(args: argparse.Namespace) -> int:
    config = config_or_exit()
    try:
        since = audit_log.parse_since(args.since)
    except ValueError as exc:
        fail(str(exc), ExitCode.CONFIG)
    if not 1 <= args.limit <= audit_log.READ_AT_MOST:
        fail(f"--limit must be from 1 to {audit_log.READ_AT_MOST}, not {args.limit}", ExitCode.CONFIG)
    try:
        with connect_db(config) as conn:
            rows = audit_log.read(conn, since(shared_now(conn)), args.limit, args.job)
    except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
        fail(f"cannot read the audit log: {type(exc).__name__}: {exc}")
    if args.json:
        print_json([row.to_json() for row in rows])
        return 0
    for row in rows:
        change = ""
        if row.before is not None or row.after is not None:
            change = f" before={json.dumps(row.before)} after={json.dumps(row.after)}"
        reason = f" reason={row.reason!r}" if row.reason else ""
        print(f"{row.at}  {row.actor}  {row.action} {row.target}{reason}{change}")
    if not rows:
        print("no action in that window")
    return 0
