"""Operator commands on the cluster's state: ``jobs``, ``locks`` and ``dlq``. Each listing takes ``--json``."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from appliance.errors import Conflict, NotFound
from appliance.kernel.protocol.ledger import read_history
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.dead_letters import DeadLetter
from appliance.kernel.protocol.state.jobs import JobView
from appliance.kernel.protocol.state.leases import LeaseView
from appliance.kernel.protocol.state.pauses import Pause
from appliance.kernel.runtime.clients import connect_db, make_redis, untrusted
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail, print_json
from appliance.kernel.runtime.startup import config_or_exit, jobs_or_exit, setup_logs, use_metrics_dir


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="list, trigger, pause, resume and run jobs; show their history")
    jsub = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add(jsub, "list", "jobs with schedule, next runs, last run, pause state and lock holder", jobs_list)
    _add(jsub, "trigger", "run NAME once now, on one worker, under its lease", jobs_control, name=True)
    for action, text in (("pause", "stop running NAME, or with --all every job, cluster-wide (persisted)"),
                         ("resume", "run NAME, or with --all every job, again from its next slot (the paused "
                                    "slots are not run)")):
        control = _add(jsub, action, text, jobs_control)
        control.add_argument("name", nargs="?", help="job name, e.g. call-scheduler")
        control.add_argument("--all", action="store_true",
                             help="every job (seed 002's scheduler stop/start); the jobs' own pause flags stay")
    history = _add(jsub, "history", "the last runs of one job, or of all", jobs_history)
    history.add_argument("name", nargs="?", help="job name (default: all jobs)")
    history.add_argument("--limit", type=int, default=20)
    _add(jsub, "run", "run NAME once in the foreground, under its lease", jobs_run, name=True)

    lock = sub.add_parser("locks", help="list or clear job leases (the lock:NAME keys)")
    lsub = lock.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add(lsub, "list", "held leases with holder, age and TTL", locks_list)
    clear = _add(lsub, "clear", "delete lock:NAME (refused while its holder is alive)", locks_clear, name=True)
    clear.add_argument("--force", action="store_true", help="clear even though the holder is alive")

    dlq = sub.add_parser("dlq", help="dead letters: runs that failed after their last retry")
    dsub = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add(dsub, "list", "dead letters, newest first", dlq_list)
    _add(dsub, "retry", "trigger the dead letter's job again and remove it", dlq_retry, ident=True)
    _add(dsub, "drop", "remove the dead letter", dlq_drop, ident=True)


def _add(sub: argparse._SubParsersAction, action: str, text: str, handler: Callable, name: bool = False,
         ident: bool = False) -> argparse.ArgumentParser:
    parser = sub.add_parser(action, help=text, description=text)
    if name:
        parser.add_argument("name", help="job name, e.g. call-scheduler")
    if ident:
        parser.add_argument("id", help="dead letter id (see 'appliance dlq list')")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=handler)
    return parser


def _state() -> ClusterState:
    config = config_or_exit()
    return ClusterState(make_redis(config.core.redis_url))


def _who() -> str:
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def _guarded(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except NotFound as exc:
        fail(str(exc))
    except Conflict as exc:
        fail(str(exc), ExitCode.BUSY)
    except redis.RedisError as exc:
        refused = untrusted(exc)
        if refused:
            fail(refused, ExitCode.CONFIG)
        fail(f"Redis unavailable: {exc}")


def _table(rows: Sequence[Mapping[str, Any]], columns: list[str]) -> None:
    text = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in text:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def jobs_list(args: argparse.Namespace) -> int:
    jobs: list[JobView] = _guarded(lambda: _state().jobs.views())
    if args.json:
        print_json([j.to_json() for j in jobs])
        return 0
    pause: Pause | None = _guarded(lambda: _state().pauses.paused_all())
    if pause:
        print(f"ALL JOBS PAUSED by {pause.by} since {pause.at} ('appliance jobs resume --all' ends it)")
    rows = [{"name": j.name, "schedule": j.published.describe, "next": j.next_run,
             "last": j.last_run.outcome if j.last_run else None, "paused": "yes" if j.paused else "no",
             "running": j.running.worker if j.running else None, "lock": j.lease_holder,
             **_policy_columns(j.published.policy)} for j in jobs]
    _table(rows, ["name", "schedule", "next", "last", "paused", "running", "lock", "overlap", "jitter", "calendars",
                  "timeout", "isolation"])
    return 0


def _policy_columns(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The schedule policy's columns of ``jobs list`` (a job published by an older worker has none)."""
    if not policy:
        return {}
    overlap = policy.get("overlap")
    if overlap == "allow":
        overlap = f"allow({policy.get('max_concurrent')})"
    return {"overlap": overlap, "jitter": f"{policy.get('jitter') or 0:g}s",
            "calendars": ",".join(policy.get("calendars") or ()) or None,
            "timeout": f"{policy['timeout']:g}s" if policy.get("timeout") else None,
            "isolation": policy.get("isolation")}


def jobs_control(args: argparse.Namespace) -> int:
    if args.action != "trigger" and bool(args.name) == bool(args.all):
        fail(f"jobs {args.action}: give a job name or --all (not both)", ExitCode.CONFIG)
    state = _state()
    who = _who()
    if args.action != "trigger" and args.all:
        pause: Pause | None = None
        if args.action == "pause":
            pause = _guarded(lambda: state.pauses.pause_all(who))
        else:
            _guarded(lambda: state.pauses.resume_all(who))
        _guarded(lambda: state.audit.record(who, f"scheduler.{args.action}-all", "*"))
        result: dict[str, object] = {"paused_all": pause is not None, "paused_by": pause.by if pause else None,
                                     "paused_at": pause.at if pause else None}
        print_json(result) if args.json else print(f"{args.action}: all jobs ok")
        return 0
    if args.action == "trigger":
        result = {"job": args.name, "trigger_id": _guarded(lambda: state.triggers.request(args.name, who))}
    else:
        _guarded(lambda: getattr(state.pauses, args.action)(args.name, who))
        result = {"job": args.name, "paused": args.action == "pause"}
    _guarded(lambda: state.audit.record(who, f"job.{args.action}", args.name))
    print_json(result) if args.json else print(f"{args.action}: {args.name} ok")
    return 0


def jobs_history(args: argparse.Namespace) -> int:
    runs = _ledger_history(args.name, args.limit)
    if runs is None:
        runs = [r.to_json() for r in _guarded(lambda: _state().history.runs(args.name, limit=args.limit))]
    if args.json:
        print_json(runs)
        return 0
    _table(runs, ["job", "slot", "started", "duration_ms", "outcome", "worker", "attempt", "error"])
    return 0


def _ledger_history(job: str | None, limit: int) -> list[dict[str, Any]] | None:
    """The ledger's history from PostgreSQL; None (with a note) when it cannot be read, and Redis' recent runs
    stand in. A job the ledger has no run of must be one the workers publish: a typo is an error, not an empty
    list (the jobs themselves are not resolved here, so a broken jobs file does not stop this command)."""
    config = config_or_exit()
    try:
        with connect_db(config) as conn:
            runs = [entry.to_json() for entry in read_history(conn, job, limit)]
    except Exception as exc:  # noqa: BLE001 - fall back to Redis, saying so
        print(f"appliance: the ledger cannot be read ({type(exc).__name__}); showing Redis' recent runs",
              file=sys.stderr)
        return None
    if job is not None and not runs:
        _guarded(lambda: _state().jobs.require(job))
    return runs


def jobs_run(args: argparse.Namespace) -> int:
    config, jobs = jobs_or_exit()
    use_metrics_dir(config)
    setup_logs(config, "cli")
    from appliance.commands.oneshot import run_command  # the worker's modules, for this command only

    return run_command(config, jobs, args.name, _who(), args.json)


def locks_list(args: argparse.Namespace) -> int:
    held = [lease.to_json() for lease in _guarded(lambda: _state().leases.held())]
    if args.json:
        print_json(held)
        return 0
    _table(held, ["key", "host", "pid", "age_seconds", "ttl_seconds", "holder_alive"])
    return 0


def locks_clear(args: argparse.Namespace) -> int:
    state = _state()
    lease: LeaseView = _guarded(lambda: state.leases.clear(args.name, force=args.force))
    _guarded(lambda: state.audit.record(_who(), "lock.clear" + (".force" if args.force else ""), args.name,
                                        lease.holder))
    print_json(lease.to_json()) if args.json else print(f"cleared {lease.key} (was held by {lease.holder})")
    return 0


def dlq_list(args: argparse.Namespace) -> int:
    letters = [letter.to_json() for letter in _guarded(lambda: _state().dead_letters.newest())]
    if args.json:
        print_json(letters)
        return 0
    _table(letters, ["id", "job", "slot", "attempts", "died_at", "error"])
    return 0


def dlq_retry(args: argparse.Namespace) -> int:
    state = _state()
    trigger_id = _guarded(lambda: state.dead_letters.retry(args.id, _who()))
    _guarded(lambda: state.audit.record(_who(), "dlq.retry", args.id))
    print_json({"id": args.id, "trigger_id": trigger_id}) if args.json else print(f"retrying {args.id}")
    return 0


def dlq_drop(args: argparse.Namespace) -> int:
    state = _state()
    letter: DeadLetter = _guarded(lambda: state.dead_letters.drop(args.id))
    _guarded(lambda: state.audit.record(_who(), "dlq.drop", args.id))
    print_json(letter.to_json()) if args.json else print(f"dropped {args.id} ({letter.job})")
    return 0
