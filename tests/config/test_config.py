"""Configuration: seed names and defaults, every problem reported at once (the jobs' too), secrets masked, exit
code 2; settings read without a job or the jobs file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from appliance.config import ConfigError, masked
from appliance.kernel.contract.catalog import Jobs, load_config_and_jobs
from appliance.kernel.contract.packs import load_settings

BASE = {"APPLIANCE_HOME": "/tmp/appliance-test-home"}


def load(**env: str):
    return load_settings({**BASE, **env}, env_file=None)


def jobs(**env: str) -> Jobs:
    return load_config_and_jobs({**BASE, **env}, env_file=None)[1]


def test_seed_defaults():
    config = load()
    assert config.core.port == 3002
    assert config.core.is_worker and config.core.worker_enabled
    assert config.crm.campaign_batch_size == 100
    assert config.crm.campaign_batch_delay == 5.0  # 5000 ms
    assert config.crm.call_scheduler_interval == 30
    assert config.crm.lead_reminder_interval == 60
    assert config.core.shutdown_timeout == 5.0
    assert config.core.lock_ttl == 60.0
    assert config.core.max_retries == 3 and config.core.retry_backoff == 5.0
    assert config.core.redis_embedded and config.core.database_embedded


def test_every_problem_is_listed_with_its_value_and_what_was_expected():
    with pytest.raises(ConfigError) as err:
        jobs(CAMPAIGN_BATCH_SIZE="abc", CALL_SCHEDULER_INTERVAL="0", REDIS_URL="http//nope",
             SCHEDULE_TIMEZONE="Mars/Olympus", SCHEDULE_TRIAL_EXPIRATION="61 * * * *", PORT="70000")
    problems = err.value.problems
    text = "\n".join(problems)
    assert len(problems) == 6, text
    for expected in ("CAMPAIGN_BATCH_SIZE=abc: expected an integer", "CALL_SCHEDULER_INTERVAL=0: expected",
                     "REDIS_URL=http//nope: expected a URL starting with redis://",
                     "SCHEDULE_TIMEZONE=Mars/Olympus: expected an IANA time zone",
                     "SCHEDULE_TRIAL_EXPIRATION=61 * * * *", "PORT=70000"):
        assert expected in text


def test_secret_file_variant_and_dotenv(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret-token\n")
    env_file = tmp_path / ".env"
    env_file.write_text("CAMPAIGN_BATCH_SIZE=7\nPORT=4000\n")
    config = load_settings({**BASE, "ADMIN_TOKEN_FILE": str(secret), "PORT": "5000"}, env_file=env_file)
    assert config.sidecar.admin_token == "s3cret-token"
    assert config.crm.campaign_batch_size == 7
    assert config.core.port == 5000, "the real environment wins over .env"


def test_masked_configuration_hides_secrets_and_url_passwords():
    config = load(REDIS_URL="redis://:hunter2@redis:6379/0", ADMIN_TOKEN="tok-123456",
                  DATABASE_URL="postgresql://app:pg-pass@db/app", OPENAI_API_KEY="sk-abcdef")
    text = json.dumps(masked(config))
    for secret in ("hunter2", "tok-123456", "pg-pass", "sk-abcdef"):
        assert secret not in text
    assert "redis://:***@redis:6379/0" in text


def test_schedule_override_and_per_job_time_zone():
    resolved = jobs(SCHEDULE_CALL_SCHEDULER="*/30 * * * * *", TIMEZONE_CALL_CLEANUP="Asia/Kolkata",
                    CALL_SCHEDULER_INTERVAL="45")
    assert resolved.job("call-scheduler").schedule.text == "*/30 * * * * *"
    assert resolved.job("call-cleanup").timezone == "Asia/Kolkata"
    assert jobs(CALL_SCHEDULER_INTERVAL="45").job("call-scheduler").schedule.text == "45s"


def test_custom_jobs_file_and_jobs_enabled(tmp_path):
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.nightly-report]\ncallable = "json:dumps"\nschedule = "mon 09:00"\n'
                    'timezone = "Europe/Paris"\nlock_ttl = 120\n')
    resolved = jobs(APPLIANCE_JOBS_FILE=str(path), JOBS_ENABLED="nightly-report")
    job = resolved.job("nightly-report")
    assert job.lock_ttl == 120 and job.timezone == "Europe/Paris" and job.enabled
    assert [j.name for j in resolved.enabled] == ["nightly-report"]


def test_bad_jobs_file_reports_each_bad_table(tmp_path):
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.a]\ncallable = "no.such.module:f"\nschedule = "1m"\n'
                    '[jobs.b]\ncallable = "json:dumps"\n'
                    '[jobs.c]\ncallable = "json:dumps"\nschedule = "every banana"\ncolour = "red"\n')
    with pytest.raises(ConfigError) as err:
        jobs(APPLIANCE_JOBS_FILE=str(path), JOBS_ENABLED="a,zzz")
    text = "\n".join(err.value.problems)
    for expected in ("[jobs.a].callable=no.such.module:f", "[jobs.b].schedule=(missing)",
                     f"{path}[jobs.c].schedule=every banana: expected an interval like 30s",
                     "[jobs.c]=colour", "JOBS_ENABLED=a,zzz"):
        assert expected in text, text
    assert "expected invalid" not in text and "SCHEDULE_C" not in text


def test_settings_alone_import_no_job_and_read_no_jobs_file(tmp_path):
    """The configuration is the lowest layer: loading it imports no job module, and a broken jobs file is a
    problem only for the commands that resolve jobs."""
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.a]\ncallable = "no.such.module:f"\nschedule = "every banana"\n')
    env = {"APPLIANCE_HOME": str(tmp_path), "APPLIANCE_JOBS_FILE": str(path)}
    code = ("import sys; from appliance.kernel.contract.packs import load_settings; "
            f"config = load_settings({env!r}, env_file=None); "
            "print(config.crm.campaign_batch_size, sorted(m for m in sys.modules "
            "if m.startswith(('appliance.packs.crm.jobs', 'appliance.packs.knowledge.jobs', 'appliance.worker'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["100", "[]"]
    with pytest.raises(ConfigError, match=r"\[jobs.a\]"):
        jobs(APPLIANCE_JOBS_FILE=str(path))


def test_a_broken_jobs_file_does_not_block_the_incident_commands(tmp_path):
    """``appliance locks list`` (and ``locks clear``) reach Redis whatever the jobs file says; ``check-config``
    reports the file."""
    path = tmp_path / "jobs.toml"
    path.write_text("[jobs.broken\n")
    env = {**BASE, "PATH": "/usr/bin:/bin", "APPLIANCE_JOBS_FILE": str(path),
           "REDIS_URL": f"unix://{tmp_path}/no-such.sock"}
    locks = subprocess.run([sys.executable, "-m", "appliance", "locks", "list"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert locks.returncode == 1 and "Redis unavailable" in locks.stderr, locks.stderr
    check = subprocess.run([sys.executable, "-m", "appliance", "check-config"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 2 and "APPLIANCE_JOBS_FILE" in check.stderr, check.stderr


def test_cli_exits_2_and_lists_every_problem():
    env = {**BASE, "PATH": "/usr/bin:/bin", "CAMPAIGN_BATCH_SIZE": "abc", "LOCK_TTL": "-1"}
    result = subprocess.run([sys.executable, "-m", "appliance", "check-config"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "CAMPAIGN_BATCH_SIZE=abc" in result.stderr and "LOCK_TTL=-1" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_json_shows_next_five_runs():
    env = {**BASE, "PATH": "/usr/bin:/bin", "ADMIN_TOKEN": "canary-admin-token"}
    result = subprocess.run([sys.executable, "-m", "appliance", "check-config", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert "canary-admin-token" not in result.stdout
    names = {job["name"]: job for job in doc["jobs"]}
    assert len(names["call-scheduler"]["next_runs"]) == 5
