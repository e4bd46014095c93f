"""``docker stop`` gives 10 s. SIGTERM to ``appliance run`` exits within SHUTDOWN_TIMEOUT + 2 s (7 s by
default) even with a job that ignores its checkpoints, or one that holds the GIL so that only SIGKILL ends
the worker; and the run cut off is recorded as abandoned: by the worker itself, or, when it was killed, by
the worker of the next start."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.appliance.harness import REPO, Appliance, appliance_home, base_env
from tests.services import wait_until
from tests.worker.harness import write_jobs_file

pytestmark = pytest.mark.process

SHUTDOWN_TIMEOUT = 5.0
BOUND = SHUTDOWN_TIMEOUT + 2


def _cli(app: Appliance, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=app.env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def _runs(app: Appliance, job: str) -> list[dict]:
    result = _cli(app, "jobs", "history", job, "--json")
    assert result.returncode == 0, result.stderr
    return [run for run in json.loads(result.stdout) if run["run_id"]]


@pytest.mark.parametrize("job", ["stubborn", "gil"])
def test_sigterm_exits_within_the_bound_and_the_cut_run_is_abandoned(tmp_path, job):
    home = appliance_home()
    jobs = write_jobs_file(tmp_path / "jobs.toml", {job: {"callable": f"tests.appliance.stop_jobs:{job}",
                                                          "schedule": "1h", "lock_ttl": 3}})
    env = base_env(home, APPLIANCE_JOBS_FILE=str(jobs), JOBS_ENABLED=job, SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT))
    started: list[Appliance] = []
    try:
        app = Appliance(env)
        started.append(app)
        app.wait_states({"worker": "RUNNING", "sidecar": "RUNNING", "postgres": "RUNNING"})
        # RUNNING is supervisord's word after startsecs; the job exists for the cluster once published.
        wait_until(lambda: _cli(app, "jobs", "trigger", job).returncode == 0, 30, "the job published")
        (run,) = wait_until(lambda: _runs(app, job), 30, "the run started", interval=0.5)  # a CLI process each
        assert run["outcome"] == "running"
        code, seconds = app.terminate()
        assert code == 0, app.output()[-3000:]
        assert seconds <= BOUND, f"stop took {seconds:.2f} s (bound {BOUND} s)"
        assert app.leftovers() == []
        again = Appliance(env)  # the same APPLIANCE_HOME: its data, its ledger
        started.append(again)
        again.wait_states({"worker": "RUNNING", "postgres": "RUNNING"})
        (ended,) = wait_until(lambda: [r for r in _runs(again, job) if r["outcome"] != "running"], 30, "reconciled",
                              interval=0.5)
        assert ended["run_id"] == run["run_id"] and ended["outcome"] == "abandoned", ended
        assert ("SHUTDOWN_TIMEOUT" in ended["reason"]) == (job == "stubborn"), ended["reason"]
        assert again.terminate()[0] == 0
    finally:
        for app in reversed(started):  # the first one removes the home directory
            app.close()
