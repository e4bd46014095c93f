"""``appliance jobs run NAME``: one run in the foreground, under the job's lock, for operators."""

from __future__ import annotations

import json
import sys

from appliance.clients import make_pool, make_redis
from appliance.config import Config
from appliance.locks import Claim
from appliance.owner import utcnow
from appliance.state import ClusterState

EXIT_FAILED = 1
EXIT_LOCKED = 3


def run_once(config: Config, name: str, who: str, as_json: bool) -> int:
    from appliance.worker.main import build

    try:
        job = config.job(name)
    except KeyError:
        known = ", ".join(j.name for j in config.jobs)
        print(f"appliance: unknown job {name!r}; known jobs: {known}", file=sys.stderr)
        return EXIT_FAILED
    client = make_redis(config.core.redis_url)
    db = make_pool(config, max_size=2, name="appliance-cli")
    db.open(wait=False)
    worker, keeper = build(config, client, db)
    keeper.start()
    try:
        attempt = worker.runner.execute(job, utcnow(), trigger={"reason": "cli", "by": who})
    finally:
        keeper.stop()
        db.close(timeout=1)
        ClusterState(client).forget_worker(keeper.heartbeat.me)
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
