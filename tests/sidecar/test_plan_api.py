"""``GET /api/jobs/NAME/plan`` against a real worker (which publishes the job's effective spec and stores it in
PostgreSQL) and a real gunicorn sidecar: the same plan as ``appliance schedule plan --json`` for the same window,
calendar exclusions with their reason, the spec's version and hash as stored; bad input is a 400 naming it."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import psycopg
import pytest

from tests.services import wait_until
from tests.sidecar.cluster import ADMIN_TOKEN
from tests.sidecar.processes import SidecarProcess, process_env
from tests.worker.harness import REPO, WorkerProcess

pytestmark = [pytest.mark.process]

JOBS = """
[calendars.weekend]
blackout = ["Sat 00:00-Sun 23:59"]

[jobs.report]
callable = "tests.sidecar.jobs:work"
schedule = "0 9 * * *"
timezone = "Europe/Berlin"
jitter = "10m"
holidays = "DE-BY"
calendar = ["weekend"]
overlap = "allow"
max_concurrent = 2
"""
FROM = "2026-12-20T00:00:00Z"


@pytest.fixture
def appliance(tmp_path, app_env, sidecar_env):
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(JOBS)
    base = {**app_env, "APPLIANCE_HOME": sidecar_env["APPLIANCE_HOME"], "APPLIANCE_JOBS_FILE": str(jobs_file),
            "ADMIN_TOKEN": ADMIN_TOKEN}
    worker = WorkerProcess(process_env(base, JOBS_ENABLED="report"), tmp_path / "worker.log")
    sidecar = SidecarProcess(process_env(base), tmp_path / "sidecar.log")
    try:
        worker.wait_for_log("worker started")
        sidecar.wait_ready()
        yield sidecar, process_env(base)
    finally:
        sidecar.stop()
        worker.terminate()


def _get(url: str, token: str | None = ADMIN_TOKEN) -> httpx.Response:
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)


def test_the_plan_endpoint_answers_what_the_cli_plans(appliance, app_env):
    sidecar, env = appliance
    url = f"{sidecar.url}/api/jobs/report/plan"
    wait_until(lambda: _get(f"{url}?next=1").status_code == 200, 15, "the job's spec published")
    answer = _get(f"{url}?next=8&from={FROM}")
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    cli = subprocess.run([sys.executable, "-m", "appliance", "schedule", "plan", "report", "--next", "8", "--from",
                          FROM, "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert plan["slots"] == json.loads(cli.stdout)["slots"]

    by_day = {s["local"][:10]: s for s in plan["slots"]}
    assert list(by_day) == [f"2026-12-{d}" for d in range(20, 28)]
    assert (by_day["2026-12-25"]["calendar"], by_day["2026-12-25"]["reason"]) == \
        ("holidays:DE-BY", "public holiday in DE-BY: Christmas Day")
    assert (by_day["2026-12-20"]["calendar"], by_day["2026-12-20"]["reason"]) == \
        ("weekend", "blackout Sat 00:00-Sun 23:59")
    monday = by_day["2026-12-21"]
    assert monday["runs"] and monday["slot"] == "2026-12-21T08:00:00Z" and monday["start"] != monday["slot"]
    assert plan["policy"] == {"overlap": "allow", "max_concurrent": 2, "jitter": 600.0, "timeout": None,
                              "isolation": "thread", "calendars": ["weekend", "holidays:DE-BY"]}
    with psycopg.connect(app_env["DATABASE_URL"]) as conn:
        stored = conn.execute("SELECT version, hash FROM job_specs WHERE job = 'report'").fetchall()
    assert stored == [(plan["spec_version"], plan["spec_hash"])]


BAD = [("?next=0", "next must be an integer from 1 to 1000, not '0'"),
       ("?next=many", "next must be an integer from 1 to 1000, not 'many'"),
       ("?next=1001", "next must be an integer from 1 to 1000, not '1001'"),
       ("?from=yesterday", "from must be an ISO 8601 time, not 'yesterday'")]


def test_bad_plan_requests_are_refused_with_the_reason(appliance):
    sidecar, _env = appliance
    url = f"{sidecar.url}/api/jobs/report/plan"
    wait_until(lambda: _get(f"{url}?next=1").status_code == 200, 15, "the job's spec published")
    for query, problem in BAD:
        answer = _get(url + query)
        assert answer.status_code == 400 and problem in answer.json()["message"], (query, answer.text)
    unknown = _get(f"{sidecar.url}/api/jobs/nosuch/plan")
    assert unknown.status_code == 404 and "unknown job 'nosuch'" in unknown.json()["message"], unknown.text
    assert _get(url, token=None).status_code == 401
