"""What an operator sees of a plain start and stop of ``appliance run`` (embedded Redis and PostgreSQL, real
supervisord): no line that reads as a fault, the worker's and sidecar's logs in their ``.log`` files, nothing
left behind in the log directory, and a ``/health`` whose uptime is the appliance's, with each program's."""

from __future__ import annotations

import json
import time

import pytest

from tests.appliance.harness import Appliance, appliance_home, base_env
from tests.services import wait_until

pytestmark = pytest.mark.process


def test_start_stop_and_health_say_only_what_happened():
    home = appliance_home()
    app = Appliance(base_env(home, PATH="/usr/bin:/bin", JOBS_ENABLED="call-cleanup"))
    try:
        states = app.wait_states({"worker": "RUNNING", "sidecar": "RUNNING", "postgres": "RUNNING"})
        first = app.wait_health()
        programs = first["programs"]
        assert programs["worker"] == {"state": "RUNNING", "pid": states["worker"][1],
                                      "uptime": programs["worker"]["uptime"]}
        assert programs["qdrant"]["state"] == "STOPPED" and programs["qdrant"]["pid"] is None

        time.sleep(2)
        restarted = app.ctl("restart", "sidecar")
        assert "sidecar: started" in restarted.stdout, restarted.stdout + restarted.stderr
        later = wait_until(lambda: (h := app.wait_health())["programs"]["sidecar"]["pid"] != states["sidecar"][1] and h,
                           30, "/health from the restarted sidecar")
        assert later["uptime"] >= first["uptime"] + 2, "the appliance's uptime survives a sidecar restart"
        assert later["programs"]["sidecar"]["uptime"] < later["uptime"]
        assert later["programs"]["worker"]["pid"] == states["worker"][1]

        code, _ = app.terminate()
        assert code == 0, app.output()[-3000:]
        output, supervisord = app.output(), "\n".join(app.supervisord_log())
        assert "waiting for PostgreSQL" not in output
        assert "stopped: logs (exit status 0)" in supervisord
        assert "SIGKILL" not in supervisord and "terminated by" not in supervisord, supervisord
        logs = home / "log"
        assert not list(logs.glob("*---supervisor-*")), sorted(p.name for p in logs.iterdir())
        worker = [json.loads(line) for line in (logs / "worker.log").read_text().splitlines()]
        assert {line["msg"] for line in worker} >= {"worker started", "worker stopped"}
        assert (logs / "worker-error.log").read_text() == ""
        assert '"logger": "gunicorn.error"' in (logs / "sidecar.log").read_text()
        assert (logs / "sidecar-error.log").read_text() == ""
    finally:
        app.close()
