"""One run of a job in this process, in the foreground, under the job's lease and fence: ``appliance jobs run
NAME`` for operators, and the ``run_once`` service of ``appliance.sdk`` that packs' commands use (``appliance
knowledge reindex``), which ``appliance.cli`` provides."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from appliance.config import Config
from appliance.kernel.contract.catalog import Jobs
from appliance.kernel.contract.services import RunOutcome
from appliance.kernel.protocol.ledger import Ledger
from appliance.kernel.protocol.locks import Claim
from appliance.kernel.protocol.state import ClusterState
from appliance.kernel.runtime import tracing
from appliance.kernel.runtime.clients import make_pool, make_redis
from appliance.kernel.runtime.clock import SYSTEM
from appliance.kernel.runtime.exits import ExitCode
from appliance.worker.dispatch import Dispatch
from appliance.worker.main import build
from appliance.worker.runner import Runner


@contextmanager
def foreground_runner(config: Config, jobs: Jobs) -> Iterator[Runner]:
    """A runner for one manual run in this process, wired as the worker's (lease keeper, ledger, fence); its
    heartbeat publishes ``jobs`` as the worker does; traced as the worker's runs are, when tracing is on."""
    tracing.start(config, "cli")  # before the pools: the job's statements are its span's children
    client = make_redis(config.core.redis_url)
    db = make_pool(config, max_size=2, name="appliance-cli")
    ledger_pool = make_pool(config, max_size=2, name="appliance-cli-ledger", autocommit=True)
    db.open(wait=False)
    ledger_pool.open(wait=False)
    assembly = build(config, client, db, ledger=Ledger(ledger_pool), jobs=jobs.enabled)
    assembly.start()
    try:
        yield assembly.worker.runner
    finally:
        assembly.stop()
        assembly.worker.runner.recorder.stop(1.0)
        db.close(timeout=1)
        ledger_pool.close(timeout=1)
        ClusterState(client).workers.forget(assembly.heartbeat.me)
        tracing.flush()


def run_job_once(config: Config, jobs: Jobs, job: str, reason: str, by: str,
                 extra: Mapping[str, Any]) -> RunOutcome:
    """The ``run_once`` service: ``job`` once now, as a manual run whose ``ctx.services`` include ``extra``."""
    with foreground_runner(config, jobs) as runner:
        runner.services.update(extra)
        attempt = runner.execute(Dispatch.manual(jobs.job(job), SYSTEM.now(), reason, by))
    if attempt.claim is not Claim.OK:
        return RunOutcome(ran=False, outcome=None, error=None)
    return RunOutcome(ran=True, outcome=attempt.outcome.value if attempt.outcome else None,
                      error=attempt.error or None)


def run_command(config: Config, jobs: Jobs, name: str, who: str, as_json: bool) -> int:
    """``appliance jobs run NAME``."""
    try:
        jobs.job(name)
    except KeyError:
        print(f"appliance: unknown job {name!r}; known jobs: {', '.join(jobs.names)}", file=sys.stderr)
        return ExitCode.FAILED
    run = run_job_once(config, jobs, name, "cli", who, {})
    result = {"job": name, "claim": Claim.OK.value if run.ran else Claim.LOCKED.value, "outcome": run.outcome or "",
              "error": run.error}
    if as_json:
        print(json.dumps(result, indent=2))
    elif run.ran:
        print(f"{name}: {run.outcome}" + (f" ({run.error})" if run.error else ""))
    if not run.ran:
        print(f"appliance: {name} is running elsewhere (lock:{name} is held); not run", file=sys.stderr)
        return ExitCode.BUSY
    return ExitCode.OK if run.succeeded else ExitCode.FAILED
