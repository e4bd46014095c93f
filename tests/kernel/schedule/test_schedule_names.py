"""``SCHEDULE_<JOB>`` must name a job: built-in or from ``APPLIANCE_JOBS_FILE``. A typo is a configuration
error listed with the others (exit code 2), never a silent default schedule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.config import ConfigError
from appliance.kernel.contract.catalog import load_config_and_jobs
from tests.worker.harness import write_jobs_file

BASE = {"APPLIANCE_HOME": "/tmp/appliance-test-home"}


def test_a_schedule_for_no_job_is_listed_with_the_other_problems():
    with pytest.raises(ConfigError) as err:
        load_config_and_jobs({**BASE, "SCHEDULE_CAMPAIGN_SCHEDULR": "5m", "SCHEDULE_NOPE": "1h", "PORT": "0"},
                             env_file=None)
    problems = err.value.problems
    assert len(problems) == 3
    assert any(p.startswith("PORT=0") for p in problems)
    typo = next(p for p in problems if p.startswith("SCHEDULE_CAMPAIGN_SCHEDULR=5m: expected"))
    assert "SCHEDULE_CAMPAIGN_SCHEDULER" in typo, "the message lists the variables that do exist"
    assert any(p.startswith("SCHEDULE_NOPE=1h: expected") for p in problems)


@pytest.mark.parametrize("name", ["SCHEDULE_CALL_SCHEDULER", "SCHEDULE_KNOWLEDGE_INDEXER", "SCHEDULE_TIMEZONE"])
def test_schedules_of_existing_jobs_and_the_default_time_zone_are_fine(name):
    value = "UTC" if name == "SCHEDULE_TIMEZONE" else "5m"
    _, jobs = load_config_and_jobs({**BASE, name: value}, env_file=None)
    assert jobs


def test_a_custom_job_has_its_schedule_variable(tmp_path):
    jobs = write_jobs_file(tmp_path / "jobs.toml",
                           {"my-report": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1h"}})
    _, resolved = load_config_and_jobs({**BASE, "APPLIANCE_JOBS_FILE": str(jobs), "SCHEDULE_MY_REPORT": "5m"},
                                       env_file=None)
    assert resolved.job("my-report").period == 300
    with pytest.raises(ConfigError, match="SCHEDULE_MY_REPORT"):
        load_config_and_jobs({**BASE, "SCHEDULE_MY_REPORT": "5m"}, env_file=None)


def test_check_config_exits_2_on_a_schedule_for_no_job(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "APPLIANCE_HOME": str(tmp_path / "home"), "SCHEDULE_TRIAL_EXPIRY": "02:00"}
    done = subprocess.run([sys.executable, "-m", "appliance", "check-config"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SCHEDULE_TRIAL_EXPIRY=02:00" in done.stderr and "SCHEDULE_TRIAL_EXPIRATION" in done.stderr
