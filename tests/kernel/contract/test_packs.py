"""A job pack of one's own plugs in as the built-in ones do: named in the ``appliance.packs`` entry-point group
of an installed distribution, its settings are read and checked with all others (exit 2), its job is resolved
with the per-job variables, and its command joins the CLI. The distribution is a real ``.dist-info`` folder on
``PYTHONPATH``, read by ``importlib.metadata`` in a fresh ``appliance`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    dist = tmp_path / "site" / "acme_reports-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-reports\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[appliance.packs]\nreports = tests.sample_pack:PACK\n")
    return {"PATH": os.environ["PATH"], "APPLIANCE_HOME": str(tmp_path / "home"),
            "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)])}


def appliance(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # From the test's folder: no .env of the checkout is read.
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env, cwd=Path(env["APPLIANCE_HOME"]).parent,
                          capture_output=True, text=True, timeout=60)


def test_its_settings_job_and_command_are_the_appliances(env):
    done = appliance({**env, "SCHEDULE_NIGHTLY_REPORT": "03:00"}, "check-config", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["reports"] == {"recipients": 3}
    assert {"crm", "knowledge"} <= set(doc), "the built-in packs stay"
    job = next(job for job in doc["jobs"] if job["name"] == "nightly-report")
    assert job["schedule"] == "03:00" and job["enabled"]
    command = appliance(env, "reports")
    assert command.returncode == 0 and command.stdout.strip() == "reports: 3 recipients", command.stderr


def test_its_bad_settings_are_listed_with_the_others(env):
    done = appliance({**env, "REPORTS_RECIPIENTS": "0", "PORT": "0", "SCHEDULE_NIGHTLY_REPORTS": "1h"},
                     "check-config")
    assert done.returncode == 2
    for expected in ("REPORTS_RECIPIENTS=0", "PORT=0", "SCHEDULE_NIGHTLY_REPORTS=1h"):
        assert expected in done.stderr, done.stderr


@pytest.mark.process
def test_a_pack_written_against_the_sdk_alone_runs_its_job_under_lease_and_fence(env, app_env):
    """The pack's own command asks the SDK's ``run_once`` for its job: the lease is taken, the fence issued, the
    job ends its slot with ``complete_slot``, and the ledger has the run."""
    import psycopg

    full = {**env, **{k: v for k, v in app_env.items() if k != "APPLIANCE_HOME"}, "JOBS_ENABLED": "nightly-report"}
    done = appliance(full, "reports-now")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {"ran": True, "outcome": "success", "error": None}
    with psycopg.connect(app_env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT outcome, trigger, processed, fence IS NOT NULL FROM job_runs "
                            "WHERE job = 'nightly-report'").fetchall()
    assert rows == [("success", "reports-now", 3, True)], rows
