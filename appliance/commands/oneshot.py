"""``appliance jobs run NAME``: one run in the foreground, under the job's lock, for operators."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from appliance.config import Config
from appliance.kernel.catalog import Jobs
from appliance.kernel.clients import make_pool, make_redis
from appliance.kernel.ledger import Ledger
from appliance.kernel.locks import Claim
from appliance.kernel.owner import utcnow
from appliance.kernel.state import ClusterState
from appliance.worker.dispatch import Dispatch
from appliance.worker.main import build, heartbeat_of
from appliance.worker.runner import Runner

EXIT_FAILED = 1
EXIT_LOCKED = 3


@contextmanager
def foreground_runner(config: Config, jobs: Jobs) -> Iterator[Runner]:
    """A runner for one manual run in this process, wired as the worker's (lease keeper, ledger, fence); its
    heartbeat publishes ``jobs`` as the worker does."""
    client = make_redis(config.core.redis_url)
    db = make_pool(config, max_size=2, name="appliance-cli")
    ledger_pool = make_pool(config, max_size=2, name="appliance-cli-ledger", autocommit=True)
    db.open(wait=False)
    ledger_pool.open(wait=False)
    worker, keeper = build(config, client, db, ledger=Ledger(ledger_pool), jobs=jobs.enabled)
    keeper.start()
    try:
        yield worker.runner
    finally:
        keeper.stop()
        worker.runner.recorder.stop(1.0)
        db.close(timeout=1)
        ledger_pool.close(timeout=1)
        ClusterState(client).forget_worker(heartbeat_of(keeper).me)


def run_once(config: Config, jobs: Jobs, name: str, who: str, as_json: bool) -> int:
    try:
        job = jobs.job(name)
    except KeyError:
        known = ", ".join(jobs.names)
        print(f"appliance: unknown job {name!r}; known jobs: {known}", file=sys.stderr)
        return EXIT_FAILED
    with foreground_runner(config, jobs) as runner:
        attempt = runner.execute(Dispatch.manual(job, utcnow(), "cli", who))
    result = {"job": name, "claim": attempt.claim.value if attempt.claim else None, "outcome": attempt.outcome,
              "error": attempt.error or None}
    if as_json:
        print(json.dumps(result, indent=2))
    elif attempt.claim is Claim.OK:
        print(f"{name}: {attempt.outcome}" + (f" ({attempt.error})" if attempt.error else ""))
    if attempt.claim is not Claim.OK:
        print(f"appliance: {name} is running elsewhere (lock:{name} is held); not run", file=sys.stderr)
        return EXIT_LOCKED
    return 0 if attempt.outcome == "success" else EXIT_FAILED
