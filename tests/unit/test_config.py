"""Configuration: seed names and defaults, every problem reported at once, secrets masked, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from appliance.config import ConfigError, load_config, masked

BASE = {"APPLIANCE_HOME": "/tmp/appliance-test-home"}


def load(**env: str):
    return load_config({**BASE, **env}, env_file=None)


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
        load(CAMPAIGN_BATCH_SIZE="abc", CALL_SCHEDULER_INTERVAL="0", REDIS_URL="http//nope",
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
    config = load_config({**BASE, "ADMIN_TOKEN_FILE": str(secret), "PORT": "5000"}, env_file=env_file)
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
    config = load(SCHEDULE_CALL_SCHEDULER="*/30 * * * * *", TIMEZONE_CALL_CLEANUP="Asia/Kolkata",
                  CALL_SCHEDULER_INTERVAL="45")
    assert config.job("call-scheduler").schedule.text == "*/30 * * * * *"
    assert config.job("call-cleanup").timezone == "Asia/Kolkata"
    assert load(CALL_SCHEDULER_INTERVAL="45").job("call-scheduler").schedule.text == "45s"


def test_custom_jobs_file_and_jobs_enabled(tmp_path):
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('[jobs.nightly-report]\ncallable = "json:dumps"\nschedule = "mon 09:00"\n'
                    'timezone = "Europe/Paris"\nlock_ttl = 120\n')
    config = load(APPLIANCE_JOBS_FILE=str(jobs), JOBS_ENABLED="nightly-report")
    job = config.job("nightly-report")
    assert job.lock_ttl == 120 and job.timezone == "Europe/Paris" and job.enabled
    assert [j.name for j in config.enabled_jobs] == ["nightly-report"]


def test_bad_jobs_file_reports_each_bad_table(tmp_path):
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('[jobs.a]\ncallable = "no.such.module:f"\nschedule = "1m"\n'
                    '[jobs.b]\ncallable = "json:dumps"\n'
                    '[jobs.c]\ncallable = "json:dumps"\nschedule = "every banana"\ncolour = "red"\n')
    with pytest.raises(ConfigError) as err:
        load(APPLIANCE_JOBS_FILE=str(jobs), JOBS_ENABLED="a,zzz")
    text = "\n".join(err.value.problems)
    for expected in ("[jobs.a].callable=no.such.module:f", "[jobs.b].schedule=(missing)",
                     f"{jobs}[jobs.c].schedule=every banana: expected an interval like 30s",
                     "[jobs.c]=colour", "JOBS_ENABLED=a,zzz"):
        assert expected in text, text
    assert "expected invalid" not in text and "SCHEDULE_C" not in text


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
