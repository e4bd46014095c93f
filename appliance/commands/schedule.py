"""``appliance schedule plan`` and ``diff``: a job's future as the worker will run it, and what a change of its
spec added or removed (``appliance.kernel.schedule.plan``). Exit 0, 2 on an unknown job or bad arguments, 1 when
the ledger (spec versions) cannot be read."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from appliance.config.env import EnvReader
from appliance.kernel.contract.spec import EffectiveSpec
from appliance.kernel.protocol import spec_versions
from appliance.kernel.runtime.clients import connect_db
from appliance.kernel.runtime.clock import SYSTEM
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail, print_json
from appliance.kernel.runtime.startup import jobs_or_exit
from appliance.kernel.schedule.plan import diff, plan_lines

MAX_NEXT = 10_000


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("schedule", help="a job's next fire times, and what a change of its spec moved")
    ssub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = ssub.add_parser("plan", help="the next fire times: zone and UTC, jitter applied, calendar exclusions "
                                        "with their reason, DST gaps and folds marked")
    show.add_argument("name", help="job name")
    show.add_argument("--next", type=int, default=10, help="how many slots (default 10)")
    show.add_argument("--from", dest="start", help="an ISO time to start from (default: now)")
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.set_defaults(handler=schedule_plan)
    changes = ssub.add_parser("diff", help="fire times added and removed between two stored spec versions")
    changes.add_argument("name", help="job name")
    changes.add_argument("--from", dest="old", type=int, help="version (default: the one before --to)")
    changes.add_argument("--to", dest="new", type=int, help="version (default: the newest)")
    changes.add_argument("--window", default="30d", help="how far ahead of now to compare (default 30d)")
    changes.add_argument("--json", action="store_true", help="print one JSON document")
    changes.set_defaults(handler=schedule_diff)


def _when(text: str | None) -> datetime:
    if not text:
        return SYSTEM.now()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--from {text!r}: expected an ISO time such as 2026-03-29T00:00:00+01:00", ExitCode.CONFIG)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def schedule_plan(args: argparse.Namespace) -> int:
    _config, jobs = jobs_or_exit()
    if args.name not in jobs.names:
        fail(f"unknown job {args.name!r}; known jobs: {', '.join(jobs.names)}", ExitCode.CONFIG)
    if not 1 <= args.next <= MAX_NEXT:
        fail(f"--next must be from 1 to {MAX_NEXT}", ExitCode.CONFIG)
    spec = EffectiveSpec.of(jobs.job(args.name))
    slots = spec.plan(_when(args.start), args.next)
    if args.json:
        print_json({"job": spec.job, "spec_hash": spec.hash, **spec.to_json(),
                    "slots": [s.to_json() for s in slots]})
        return 0
    policy = spec.policy.columns()
    print(f"{spec.job}: {spec.schedule.describe()}, zone {spec.schedule.tz.key}, jitter {policy['jitter']:g} s, "
          f"calendars {', '.join(policy['calendars']) or 'none'}, overlap {policy['overlap']}")
    for line in plan_lines(slots):
        print(line)
    return 0


def schedule_diff(args: argparse.Namespace) -> int:
    config, _jobs = jobs_or_exit()
    env = EnvReader({"WINDOW": args.window})
    window = env.duration("WINDOW", 0.0)
    if env.problems or window <= 0:
        fail(f"--window {args.window!r}: expected a duration like 7d or 30d", ExitCode.CONFIG)
    try:
        with connect_db(config) as conn:
            stored = spec_versions.versions(conn, args.name)
    except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
        fail(f"cannot read the spec versions: {type(exc).__name__}: {exc}")
    by_version = {v.version: v for v in stored}
    if not stored:
        fail(f"no stored spec of {args.name!r} (a worker stores one when it starts with the job)", ExitCode.CONFIG)
    new = args.new or stored[-1].version
    old = args.old or new - 1
    if old not in by_version or new not in by_version:
        known = ", ".join(str(v) for v in by_version)
        fail(f"versions of {args.name}: {known}; --from {old} --to {new} is not among them", ExitCode.CONFIG)
    now = SYSTEM.now()
    until = now + timedelta(seconds=window)
    a, b = (EffectiveSpec.from_json(by_version[v].spec) for v in (old, new))
    added, removed = diff(a.fire_times(now, until), b.fire_times(now, until))
    if args.json:
        print_json({"job": args.name, "from": old, "to": new, "window_seconds": window,
                    "added": [s.to_json() for s in added], "removed": [s.to_json() for s in removed]})
        return 0
    print(f"{args.name}: version {old} ({by_version[old].hash}) -> {new} ({by_version[new].hash}), "
          f"{len(added)} added, {len(removed)} removed until {until.isoformat()}")
    for sign, slots in (("+", added), ("-", removed)):
        for s in slots:
            print(f"{sign} {s.start.isoformat()}  ({s.local.isoformat()})")
    return 0
