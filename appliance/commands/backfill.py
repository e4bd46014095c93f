"""``appliance backfill JOB --from ISO --to ISO``: plan from the ledger first, then let the workers run the plan.

The plan says which slots will run and which will not, and why (already committed, not chosen by ``--only``,
left to the live schedule). ``--dry-run`` prints it and changes nothing. Otherwise the plan is stored and the
workers run its slots under the job's lease and fence (``appliance.worker.backfills``), while this command shows
their progress (a progress bar on a terminal) until every slot has ended; Ctrl-C (or ``--detach``) leaves it
running in the cluster (``GET /api/backfills/ID`` shows it). Exit 0 when every planned slot committed, 1 when one
ended otherwise, 2 on bad input (unknown job, ``--to`` before ``--from``, too many slots without ``--force``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from tqdm import tqdm

from appliance.kernel.protocol.backfill import Plan, Progress
from appliance.kernel.runtime.clock import SYSTEM
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import print_json

#: How often the command looks at the backfill's progress.
POLL_EVERY = 0.5
#: Slots of each kind listed in the text plan (the JSON has them all).
LISTED = 10


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("backfill", help="run a job's slots of the past: planned from the ledger first",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", help="job name, e.g. call-scheduler")
    parser.add_argument("--from", dest="since", required=True, metavar="ISO", help="first slot (ISO 8601 time)")
    parser.add_argument("--to", dest="until", required=True, metavar="ISO", help="last slot (ISO 8601 time)")
    parser.add_argument("--only", default="missing", choices=("missing", "failed", "all"),
                        help="missing: slots that never ran; failed: slots that ran without committing; all: both")
    parser.add_argument("--max-parallel", type=int, default=1, metavar="N",
                        help="slots of this backfill run at once at most (the job's lease allows one run at a time)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    parser.add_argument("--force", action="store_true", help="allow a window of more than 10,000 slots")
    parser.add_argument("--reason", default="", help="why: in the audit log")
    parser.add_argument("--detach", action="store_true", help="start it and return, without waiting")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run_backfill)


def run_backfill(args: argparse.Namespace) -> int:
    from appliance.commands.control import _guarded, _who, actions  # one way of making actions for the CLI

    acts = actions()
    plan: Plan = _guarded(lambda: acts.plan_backfill(args.job, args.since, args.until, args.only,
                                                     args.max_parallel, args.force))
    if args.dry_run or not plan.run:
        if args.json:
            print_json({"plan": plan.to_json(), "backfill": None, "dry_run": args.dry_run})
        else:
            _print_plan(plan)
            print("dry run: nothing changed" if args.dry_run else "nothing to run")
        return 0
    ident = _guarded(lambda: acts.start_backfill(_who(), plan, args.reason or None))
    if not args.json:
        _print_plan(plan)
        print(f"backfill {ident} started: the workers run its {len(plan.run)} slot(s)")
    for warning in acts.warnings:
        print(f"appliance: warning: {warning}", file=sys.stderr)
    progress = None if args.detach else _follow(acts, ident, len(plan.run), bar=not args.json and sys.stderr.isatty())
    if args.json:
        print_json({"plan": plan.to_json(), "backfill": ident, "progress": progress.to_json() if progress else None})
    elif progress is not None:
        outcomes = ", ".join(f"{k}={v}" for k, v in sorted(progress.outcomes.items())) or "none"
        print(f"backfill {ident}: {progress.finished}/{progress.total} slots ended ({outcomes})")
    if progress is None:
        return 0
    failed = progress.total - progress.outcomes.get("success", 0)
    return ExitCode.FAILED if failed else 0


def _follow(acts, ident: str, total: int, bar: bool) -> Progress | None:
    """Wait for every slot to end, showing the progress; None when interrupted (the backfill goes on)."""
    shown = tqdm(total=total, unit="slot", desc=f"backfill {ident}", disable=not bar, file=sys.stderr)
    try:
        while True:
            progress = acts.backfill_progress(ident)
            if progress is None:
                return None
            shown.update(progress.finished - shown.n)
            if progress.complete:
                return progress
            SYSTEM.sleep(POLL_EVERY)
    except KeyboardInterrupt:
        print(f"\nappliance: backfill {ident} goes on in the cluster; GET /api/backfills/{ident} shows its progress",
              file=sys.stderr)
        return None
    finally:
        shown.close()


def _print_plan(plan: Plan) -> None:
    doc = plan.to_json()
    print(f"backfill {plan.job} {doc['from']} .. {doc['to']} (--only {plan.selection}): {len(plan.run)} slot(s) "
          f"will run, {len(plan.skip)} will not")
    for slot, outcome in plan.run[:LISTED]:
        print(f"  run   {slot}  (now: {outcome or 'no row'})")
    if len(plan.run) > LISTED:
        print(f"  run   ... and {len(plan.run) - LISTED} more")
    reasons = Counter(s.why for s in plan.skip)
    for why, count in reasons.most_common():
        first = next(s.slot for s in plan.skip if s.why == why)
        print(f"  skip  {count} slot(s) from {first}: {why}")
