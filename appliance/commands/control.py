"""Operator commands on the cluster's state: ``jobs``, ``locks`` and ``dlq``. Each listing takes ``--json``."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections.abc import Callable
from typing import Any

import redis

from appliance.errors import Conflict, NotFound
from appliance.kernel.protocol.ledger import read_history
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime.clients import connect_db, make_redis, untrusted
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.output import fail, print_json
from appliance.kernel.runtime.startup import config_or_exit, jobs_or_exit, setup_logs, use_metrics_dir


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="list, trigger, pause, resume and run jobs; show their history")
    jsub = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add(jsub, "list", "jobs with schedule, next runs, last run, pause state and lock holder", jobs_list)
    _add(jsub, "trigger", "run NAME once now, on one worker, under its lock", jobs_control, name=True)
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
    _add(jsub, "run", "run NAME once in the foreground, under its lock", jobs_run, name=True)

    lock = sub.add_parser("locks", help="list or clear job locks")
    lsub = lock.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add(lsub, "list", "held locks with holder, age and TTL", locks_list)
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


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    text = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in text:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def jobs_list(args: argparse.Namespace) -> int:
    jobs = _guarded(lambda: _state().jobs())
    if args.json:
        print_json(jobs)
        return 0
    pause = _guarded(lambda: _state().paused_all())
    if pause:
        print(f"ALL JOBS PAUSED by {pause['by']} since {pause['at']} ('appliance jobs resume --all' ends it)")
    rows = [{"name": j["name"], "schedule": j.get("describe"), "next": (j.get("next_runs") or [None])[0],
             "last": (j.get("last_run") or {}).get("outcome"), "paused": "yes" if j["paused"] else "no",
             "running": (j.get("running") or {}).get("worker"), "lock": j.get("lock_holder")} for j in jobs]
    _table(rows, ["name", "schedule", "next", "last", "paused", "running", "lock"])
    return 0


def jobs_control(args: argparse.Namespace) -> int:
    if args.action != "trigger" and bool(args.name) == bool(args.all):
        fail(f"jobs {args.action}: give a job name or --all (not both)", ExitCode.CONFIG)
    state = _state()
    who = _who()
    if args.action != "trigger" and args.all:
        if args.action == "pause":
            pause = _guarded(lambda: state.pause_all(who))
        else:
            pause = None
            _guarded(lambda: state.resume_all(who))
        _guarded(lambda: state.audit(who, f"scheduler.{args.action}-all", "*"))
        result: dict[str, Any] = {"paused_all": pause is not None, "paused_by": (pause or {}).get("by"),
                  "paused_at": (pause or {}).get("at")}
        print_json(result) if args.json else print(f"{args.action}: all jobs ok")
        return 0
    if args.action == "trigger":
        result = {"job": args.name, "trigger_id": _guarded(lambda: state.trigger(args.name, who))}
    else:
        _guarded(lambda: getattr(state, args.action)(args.name, who))
        result = {"job": args.name, "paused": args.action == "pause"}
    _guarded(lambda: state.audit(who, f"job.{args.action}", args.name))
    print_json(result) if args.json else print(f"{args.action}: {args.name} ok")
    return 0


def jobs_history(args: argparse.Namespace) -> int:
    runs = _ledger_history(args.name, args.limit)
    if runs is None:
        runs = _guarded(lambda: _state().history(args.name, limit=args.limit))
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
            runs = read_history(conn, job, limit)
    except Exception as exc:  # noqa: BLE001 - fall back to Redis, saying so
        print(f"appliance: the ledger cannot be read ({type(exc).__name__}); showing Redis' recent runs",
              file=sys.stderr)
        return None
    if job is not None and not runs:
        _guarded(lambda: _state().require_job(job))
    return runs


def jobs_run(args: argparse.Namespace) -> int:
    config, jobs = jobs_or_exit()
    use_metrics_dir(config)
    setup_logs(config, "cli")
    from appliance.commands.oneshot import run_command  # the worker's modules, for this command only

    return run_command(config, jobs, args.name, _who(), args.json)


def locks_list(args: argparse.Namespace) -> int:
    held = _guarded(lambda: _state().locks())
    if args.json:
        print_json(held)
        return 0
    _table(held, ["key", "host", "pid", "age_seconds", "ttl_seconds", "holder_alive"])
    return 0


def locks_clear(args: argparse.Namespace) -> int:
    state = _state()
    info = _guarded(lambda: state.clear_lock(args.name, force=args.force))
    _guarded(lambda: state.audit(_who(), "lock.clear" + (".force" if args.force else ""), args.name, info["holder"]))
    print_json(info) if args.json else print(f"cleared {info['key']} (was held by {info['holder']})")
    return 0


def dlq_list(args: argparse.Namespace) -> int:
    letters = _guarded(lambda: _state().dead_letters())
    if args.json:
        print_json(letters)
        return 0
    _table(letters, ["id", "job", "slot", "attempts", "died_at", "error"])
    return 0


def dlq_retry(args: argparse.Namespace) -> int:
    state = _state()
    trigger_id = _guarded(lambda: state.retry_dead_letter(args.id, _who()))
    _guarded(lambda: state.audit(_who(), "dlq.retry", args.id))
    print_json({"id": args.id, "trigger_id": trigger_id}) if args.json else print(f"retrying {args.id}")
    return 0


def dlq_drop(args: argparse.Namespace) -> int:
    state = _state()
    entry = _guarded(lambda: state.drop_dead_letter(args.id))
    _guarded(lambda: state.audit(_who(), "dlq.drop", args.id))
    print_json(entry) if args.json else print(f"dropped {args.id} ({entry['job']})")
    return 0
