"""Operator commands on the cluster's state: ``jobs``, ``locks`` and ``dlq``. Each listing takes ``--json``.

Every change goes through ``appliance.kernel.protocol.actions`` (as the admin API's do): input checked first (exit 2
and one line, nothing changed), then the change and its audit-log row, the actor being ``cli:<user>@<host>``."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from appliance.errors import Conflict, NotFound
from appliance.kernel.contract.params import ParamError, parse_pairs
from appliance.kernel.protocol.actions import Actions, Refused
from appliance.kernel.protocol.ledger import read_history
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.protocol.state.dead_letters import DeadLetter
from appliance.kernel.protocol.state.jobs import JobView
from appliance.kernel.protocol.state.leases import LeaseView
from appliance.kernel.protocol.state.pauses import Pause
from appliance.kernel.runtime.clients import connect_db, make_redis, untrusted
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail, print_json
from appliance.kernel.runtime.redaction import Redactor
from appliance.kernel.runtime.startup import config_or_exit, jobs_or_exit, setup_logs, use_metrics_dir


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="list, trigger, pause, resume and run jobs; show their history")
    jsub = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add(jsub, "list", "jobs with schedule, next runs, last run, pause state and lock holder", jobs_list)
    trigger = _add(jsub, "trigger", "run NAME once now, on one worker, under its lease", jobs_control, name=True)
    trigger.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="a parameter the job declares (repeatable); checked against its declaration")
    trigger.add_argument("--slot", metavar="ISO", help="the instant the run is for (ctx.slot); default: now")
    for action, text in (("pause", "stop running NAME, or with --all every job, cluster-wide (persisted)"),
                         ("resume", "run NAME, or with --all every job, again from its next slot (its pause's "
                                    "--on-resume policy decides which paused slots run)")):
        control = _add(jsub, action, text, jobs_control)
        control.add_argument("name", nargs="?", help="job name, e.g. call-scheduler")
        control.add_argument("--all", action="store_true",
                             help="every job (seed 002's scheduler stop/start); the jobs' own pause flags stay")
        if action == "pause":
            control.add_argument("--reason", default="", help="why: on every paused slot's row and in the audit log")
            control.add_argument("--until", metavar="ISO|DURATION",
                                 help="resume by itself then (an ISO time, or 30m, 2h, 1d from now)")
            control.add_argument("--on-resume", default="skip", metavar="skip|run_latest|catch_up:N",
                                 help="which paused slots run when the pause ends (default: skip)")
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


def actions() -> Actions:
    """The operator actions as the CLI does them (its own Redis client, a new PostgreSQL connection per write)."""
    config = config_or_exit()
    return Actions(ClusterState(make_redis(config.core.redis_url)), lambda: connect_db(config),
                   Redactor.from_config(config), config.core.clock_skew_warn)


def done(acts: Actions, result: Any, as_json: bool, line: str) -> int:
    """Print an action's result and any warning (an audit row PostgreSQL did not take)."""
    print_json(result) if as_json else print(line)
    for warning in acts.warnings:
        print(f"appliance: warning: {warning}", file=sys.stderr)
    return 0


def _guarded(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except (NotFound, Refused) as exc:
        fail(str(exc), ExitCode.CONFIG)
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
    acts, who = actions(), _who()
    job = None if args.action != "trigger" and args.all else args.name
    result: dict[str, object]
    if args.action == "trigger":
        try:
            params = parse_pairs(args.param)
        except ParamError as exc:
            fail(str(exc), ExitCode.CONFIG)
        trigger_id = _guarded(lambda: acts.trigger(who, args.name, params or None, args.slot))
        result = {"job": args.name, "trigger_id": trigger_id}
    elif args.action == "pause":
        pause: Pause = _guarded(lambda: acts.pause(who, job, args.reason, args.until, args.on_resume))
        result = {"job": job, "paused": True, **pause.to_json()} if job else {
            "paused_all": True, "paused_by": pause.by, "paused_at": pause.at, **pause.to_json()}
    else:
        ended, queued = _guarded(lambda: acts.resume(who, job))
        result = {"job": job, "paused": False} if job else {"paused_all": False, "paused_by": None,
                                                            "paused_at": None}
        result.update({"ended": ended.to_json() if ended else None, "backfills": queued})
    target = args.name if job else "all jobs"
    line = f"{args.action}: {target} ok"
    if result.get("backfills"):
        line += " (on resume: " + ", ".join(f"{j} backfill {b}" for j, b in queued.items()) + ")"
    return done(acts, result, args.json, line)


def jobs_history(args: argparse.Namespace) -> int:
    runs = _ledger_history(args.name, args.limit)
    if runs is None:
        runs = [r.to_json() for r in _guarded(lambda: _state().history.runs(args.name, limit=args.limit))]
    if args.json:
        print_json(runs)
        return 0
    for run in runs:
        params = run.get("params")
        run["params"] = ",".join(f"{k}={v}" for k, v in params.items()) if params else None
    _table(runs, ["job", "slot", "started", "duration_ms", "outcome", "trigger", "params", "worker", "attempt",
                  "error"])
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
    acts = actions()
    lease: LeaseView = _guarded(lambda: acts.clear_lock(_who(), args.name, args.force))
    return done(acts, lease.to_json(), args.json, f"cleared {lease.key} (was held by {lease.holder})")


def dlq_list(args: argparse.Namespace) -> int:
    letters = [letter.to_json() for letter in _guarded(lambda: _state().dead_letters.newest())]
    if args.json:
        print_json(letters)
        return 0
    _table(letters, ["id", "job", "slot", "attempts", "died_at", "error"])
    return 0


def dlq_retry(args: argparse.Namespace) -> int:
    acts = actions()
    trigger_id = _guarded(lambda: acts.retry_dead_letter(_who(), args.id))
    return done(acts, {"id": args.id, "trigger_id": trigger_id}, args.json, f"retrying {args.id}")


def dlq_drop(args: argparse.Namespace) -> int:
    acts = actions()
    letter: DeadLetter = _guarded(lambda: acts.drop_dead_letter(_who(), args.id))
    return done(acts, letter.to_json(), args.json, f"dropped {args.id} ({letter.job})")
