"""The seeds' names for settings (seeds 000-003): read as the project's own when those are not set, two names of
one setting set to different values a configuration error naming both, and ``check-config`` saying which was
used or that one means nothing here."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.errors import ConfigError
from appliance.kernel.contract.catalog import load_config_and_jobs


class Loaded:
    """The configuration and its jobs, read the way the worker reads them."""

    def __init__(self, env: dict[str, str]):
        self.config, self.jobs = load_config_and_jobs(env, env_file=None)

    def __getattr__(self, name: str):
        return getattr(self.config, name)

    def job(self, name: str):
        return self.jobs.job(name)


def config(**env: str):
    return Loaded(env)


@pytest.mark.parametrize("env, read, expected", [
    ({"LOG_LEVEL": "warn"}, lambda c: c.core.log_level, "warning"),
    ({"LOG_LEVEL": "verbose"}, lambda c: c.core.log_level, "debug"),
    ({"QUEUE_MAX_RETRIES": "7"}, lambda c: c.core.max_retries, 7),
    ({"MAX_RETRIES": "6"}, lambda c: c.core.max_retries, 6),
    ({"QUEUE_MAX_RETRIES": "7", "MAX_RETRIES": "7"}, lambda c: c.core.max_retries, 7),
    ({"JOB_MAX_RETRIES": "7", "QUEUE_MAX_RETRIES": "7"}, lambda c: c.core.max_retries, 7),
    ({"QUEUE_RETRY_BACKOFF_MS": "2000"}, lambda c: c.core.retry_backoff, 2.0),
    ({"RETRY_DELAY": "2000"}, lambda c: c.core.retry_backoff, 2.0),
    ({"RETRY_DELAY": "2000", "JOB_RETRY_BACKOFF_MS": "2s"}, lambda c: c.core.retry_backoff, 2.0),
    ({"ENABLE_SCHEDULER": "false"}, lambda c: c.core.worker_enabled, False),
    ({"ENABLE_SCHEDULER": "false", "WORKER_ENABLED": "off"}, lambda c: c.core.worker_enabled, False),
    ({"ALERT_WARNING_THRESHOLD": "8"}, lambda c: c.core.alerts.warning_threshold, 8),
    ({}, lambda c: c.core.alerts.warning_threshold, 5),
    ({"API_CIRCUIT_BREAKER_THRESHOLD": "9"}, lambda c: c.crm.breaker_threshold, 9),
    ({"API_CIRCUIT_BREAKER_DURATION_MS": "30000"}, lambda c: c.crm.breaker_reset, 30.0),
    ({"API_CIRCUIT_BREAKER_DURATION_MS": "45000", "PROVIDER_BREAKER_RESET": "45"}, lambda c: c.crm.breaker_reset,
     45.0),
    ({"API_REQUEST_TIMEOUT_MS": "2500"}, lambda c: (c.crm.whatsapp.timeout, c.crm.voice.timeout), (2.5, 2.5)),
    ({"API_REQUEST_TIMEOUT_MS": "2500", "VOICE_TIMEOUT": "2.5"}, lambda c: c.crm.voice.timeout, 2.5),
    ({"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380"}, lambda c: (c.core.redis_url, c.core.redis_embedded),
     ("redis://cache.internal:6380", False)),
    ({"REDIS_HOST": "cache.internal"}, lambda c: c.core.redis_url, "redis://cache.internal:6379"),
    ({"REDIS_PORT": "6380"}, lambda c: c.core.redis_url, "redis://localhost:6380"),
    ({"REDIS_HOST": "::1"}, lambda c: c.core.redis_url, "redis://[::1]:6379"),
    ({"REDIS_HOST": "cache", "REDIS_URL": "redis://cache:6379/2"}, lambda c: c.core.redis_url, "redis://cache:6379/2"),
    # Kubernetes' service link for a Service named redis is not seed 001's port.
    ({"REDIS_PORT": "tcp://10.0.0.11:6379"}, lambda c: c.core.redis_embedded, True),
    ({"REDIS_PORT": "tcp://10.0.0.11:6379", "REDIS_URL": "redis://redis:6379/0"}, lambda c: c.core.redis_url,
     "redis://redis:6379/0"),
    ({"CRON_CALL_SCHEDULER": "*/2 * * * *"}, lambda c: c.job("call-scheduler").schedule.text, "*/2 * * * *"),
    ({"CRON_CALL_SCHEDULER": "45s", "SCHEDULE_CALL_SCHEDULER": "45s"},
     lambda c: c.job("call-scheduler").schedule.text, "45s"),
])
def test_a_seed_name_is_read_as_the_project_setting(env, read, expected):
    assert read(config(**env)) == expected


def test_notes_say_which_name_was_used_and_which_mean_nothing():
    notes = config(QUEUE_MAX_RETRIES="7", MAX_RETRIES="7", ENABLE_SCHEDULER="true", WORKER_ENABLED="true",
                   RETRY_DELAY="5000", REDIS_HOST="cache", LOG_LEVEL="warn", NODE_ENV="production",
                   WORKER_POLL_INTERVAL_MS="60000", WORKER_BATCH_SIZE="20", CONCURRENCY="5", QUEUE_CONCURRENCY="5",
                   API_REQUEST_TIMEOUT_MS="10000").notes
    assert notes[:6] == (
        "JOB_MAX_RETRIES taken from QUEUE_MAX_RETRIES (a seed's name for it)",
        "MAX_RETRIES ignored: QUEUE_MAX_RETRIES is used for JOB_MAX_RETRIES, with the same value",
        "JOB_RETRY_BACKOFF_MS taken from RETRY_DELAY (a seed's name for it)",
        "ENABLE_SCHEDULER ignored: WORKER_ENABLED is used for WORKER_ENABLED, with the same value",
        "REDIS_URL taken from REDIS_HOST (seed 001's names for it): redis://cache:6379",
        "LOG_LEVEL=warn read as warning",
    )
    meaningless = {note.split(" ")[0]: note for note in notes[6:11]}
    assert list(meaningless) == ["WORKER_POLL_INTERVAL_MS", "NODE_ENV", "WORKER_BATCH_SIZE", "CONCURRENCY",
                                 "QUEUE_CONCURRENCY"]
    assert all(" has no meaning here and is ignored: " in note for note in meaningless.values())
    assert "the worker does not poll" in meaningless["WORKER_POLL_INTERVAL_MS"]
    assert "CAMPAIGN_BATCH_SIZE" in meaningless["WORKER_BATCH_SIZE"]
    assert meaningless["CONCURRENCY"].partition(":")[2] == meaningless["QUEUE_CONCURRENCY"].partition(":")[2]
    assert "no cap on jobs running at once" in meaningless["CONCURRENCY"]
    assert notes[11:] == ("WHATSAPP_TIMEOUT taken from API_REQUEST_TIMEOUT_MS (a seed's name for it)",
                          "VOICE_TIMEOUT taken from API_REQUEST_TIMEOUT_MS (a seed's name for it)")
    assert config().notes == ()


@pytest.mark.parametrize("env, problem", [
    ({"QUEUE_MAX_RETRIES": "7", "JOB_MAX_RETRIES": "2"},
     "QUEUE_MAX_RETRIES=7 and JOB_MAX_RETRIES=2 are one setting set twice, differently: keep one of them"),
    ({"QUEUE_MAX_RETRIES": "7", "MAX_RETRIES": "6"},
     "MAX_RETRIES=6 and QUEUE_MAX_RETRIES=7 are one setting (JOB_MAX_RETRIES) set twice, differently"),
    ({"RETRY_DELAY": "5000", "JOB_RETRY_BACKOFF_MS": "2000"},
     "RETRY_DELAY=5000 and JOB_RETRY_BACKOFF_MS=2000 are one setting set twice"),
    ({"ENABLE_SCHEDULER": "false", "WORKER_ENABLED": "true"},
     "ENABLE_SCHEDULER=false and WORKER_ENABLED=true are one setting set twice"),
    ({"API_CIRCUIT_BREAKER_DURATION_MS": "30000", "PROVIDER_BREAKER_RESET": "60"},
     "API_CIRCUIT_BREAKER_DURATION_MS=30000 and PROVIDER_BREAKER_RESET=60 are one setting set twice"),
    ({"API_REQUEST_TIMEOUT_MS": "10000", "WHATSAPP_TIMEOUT": "5"},
     "API_REQUEST_TIMEOUT_MS=10000 and WHATSAPP_TIMEOUT=5 are one setting set twice"),
    ({"CRON_CALL_SCHEDULER": "*/2 * * * *", "SCHEDULE_CALL_SCHEDULER": "45s"},
     "CRON_CALL_SCHEDULER=*/2 * * * * and SCHEDULE_CALL_SCHEDULER=45s are one setting set twice"),
    ({"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_URL": "redis://:hunter2@cache:6379/0"},
     "REDIS_HOST=cache, REDIS_PORT=6380 and REDIS_URL=redis://:***@cache:6379/0 name different Redis servers"),
    ({"REDIS_PORT": "sixty"}, "REDIS_PORT=sixty: expected a port number from 1 to 65535"),
    ({"REDIS_HOST": "cache:6379"}, "REDIS_HOST=cache:6379: expected a host name or IP address"),
])
def test_two_names_of_one_setting_set_differently_are_an_error_naming_both(env, problem):
    with pytest.raises(ConfigError) as err:
        config(**env)
    assert problem in str(err.value)
    assert "hunter2" not in str(err.value)


def test_a_bad_value_under_a_seed_name_is_reported_under_that_name_with_the_others():
    with pytest.raises(ConfigError) as err:
        config(QUEUE_MAX_RETRIES="lots", CRON_NO_SUCH_JOB="* * * * *", LOG_LEVEL="loud")
    text = str(err.value)
    assert "QUEUE_MAX_RETRIES (read as JOB_MAX_RETRIES)=lots: expected an integer" in text
    assert "CRON_NO_SUCH_JOB (read as SCHEDULE_NO_SUCH_JOB)=* * * * *" in text
    assert "LOG_LEVEL=loud: expected one of" in text


def check_config(tmp_path, **env: str) -> subprocess.CompletedProcess:
    env = {"APPLIANCE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, "-m", "appliance", "check-config"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


def test_check_config_prints_the_seed_names_section(tmp_path):
    result = check_config(tmp_path, LOG_LEVEL="warn", NODE_ENV="production", REDIS_HOST="cache", REDIS_PORT="6380",
                          RETRY_DELAY="5000", QUEUE_CONCURRENCY="5")
    assert result.returncode == 0, result.stderr
    assert "  redis_url = redis://cache:6380\n" in result.stdout and "  redis_embedded = False\n" in result.stdout
    section = result.stdout.split("[seed names]\n", 1)[1].split("[jobs]")[0].splitlines()
    assert section[:3] == ["  JOB_RETRY_BACKOFF_MS taken from RETRY_DELAY (a seed's name for it)",
                           "  REDIS_URL taken from REDIS_HOST and REDIS_PORT (seed 001's names for it): "
                           "redis://cache:6380",
                           "  LOG_LEVEL=warn read as warning"]
    assert section[3].startswith("  NODE_ENV has no meaning here")
    assert section[4].startswith("  QUEUE_CONCURRENCY has no meaning here")


def test_check_config_exits_2_naming_both_names_of_a_setting_set_differently(tmp_path):
    result = check_config(tmp_path, RETRY_DELAY="5000", JOB_RETRY_BACKOFF_MS="1000", QUEUE_MAX_RETRIES="lots")
    assert result.returncode == 2
    assert "RETRY_DELAY=5000 and JOB_RETRY_BACKOFF_MS=1000 are one setting set twice" in result.stderr
    assert "QUEUE_MAX_RETRIES (read as JOB_MAX_RETRIES)=lots: expected an integer" in result.stderr, "every problem"
