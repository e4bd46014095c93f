"""``appliance audit``: check the slot ledger for the worker's promises (see ``appliance.kernel.protocol.audit``).

Times are taken on PostgreSQL's clock (``--since 10m`` is ten minutes before its ``now()``), not on the clock of
the host the command runs on, which may disagree with the cluster's; worker clocks up to ``CLOCK_SKEW_WARN``
behind it are allowed for. Exit 0 when the window holds no violation, 1 when it does (each is listed), 2 on
bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from appliance.config.env import EnvReader
from appliance.kernel.protocol.audit import Report, audit, shared_now
from appliance.kernel.runtime.clients import connect_db
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail, print_json
from appliance.kernel.runtime.startup import jobs_or_exit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("audit", help="prove from the ledger that every slot ran once or says why not, "
                                          "that committed runs never overlapped and fences only grew")
    parser.add_argument("--since", default="24h", help="start: a duration ago (30m, 24h, 7d) or an ISO time")
    parser.add_argument("--until", default="0s", help="end: a duration ago or an ISO time (default: now; each "
                                                      "job's window also ends a lock TTL + grace + "
                                                      "CLOCK_SKEW_WARN ago)")
    parser.add_argument("--job", action="append", help="only this job (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run_audit)


def parse_when(text: str) -> Callable[[datetime], datetime]:
    """A duration ago (``30m``) or an ISO 8601 time (UTC when it names no zone), as a function of now."""
    env = EnvReader({"WHEN": text})
    seconds = env.duration("WHEN", -1.0)
    if not env.problems and seconds >= 0:
        return lambda now: now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: expected a duration like 30m or 24h, or an ISO time") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return lambda _now: when


def run_audit(args: argparse.Namespace) -> int:
    config, known = jobs_or_exit()
    try:
        since, until = parse_when(args.since), parse_when(args.until)
    except ValueError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    jobs = [job for job in known.enabled if not args.job or job.name in args.job]
    unknown = set(args.job or ()) - set(known.names)
    if unknown:
        print(f"appliance: unknown job(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return ExitCode.CONFIG
    try:
        with connect_db(config) as conn:
            # Its reads are index ranges of the window, but a large ledger makes their estimated cost pass
            # jit_above_cost: compiling them took longer than running them (1.3 s of CPU for a 40 ms read).
            conn.execute("SET jit = off")
            now = shared_now(conn)
            report = audit(conn, jobs, since(now), until(now), now, config.core.clock_skew_warn)
    except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
        fail(f"cannot read the ledger: {type(exc).__name__}: {exc}")
    if args.json:
        print_json(report.as_dict())
    else:
        _print(report)
    return 0 if report.ok else ExitCode.FAILED


def _print(report: Report) -> None:
    doc = report.as_dict()
    print(f"audit {doc['since']} .. {doc['until']}: {'OK' if report.ok else f'{len(report.violations)} violation(s)'}")
    for name, info in report.jobs.items():
        outcomes = ", ".join(f"{k}={v}" for k, v in sorted(info.outcomes.items())) or "none"
        print(f"  {name}: {info.recorded}/{info.expected} slots recorded ({outcomes}); "
              f"{info.committed_runs} committed runs; window ends {info.window_end}")
    for v in report.violations:
        print(f"  VIOLATION {v.kind} {v.job}" + (f" slot {v.slot}" if v.slot else "") + f": {v.detail}")
