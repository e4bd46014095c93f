"""The seeds' names for settings (seeds 000-003): read as the project's own when those are not set, the
project's name winning when both are, and ``check-config`` saying which was used or that one means nothing."""

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
    ({"QUEUE_MAX_RETRIES": "7", "MAX_RETRIES": "6"}, lambda c: c.core.max_retries, 7),
    ({"JOB_MAX_RETRIES": "2", "QUEUE_MAX_RETRIES": "7"}, lambda c: c.core.max_retries, 2),
    ({"QUEUE_RETRY_BACKOFF_MS": "2000"}, lambda c: c.core.retry_backoff, 2.0),
    ({"ENABLE_SCHEDULER": "false"}, lambda c: c.core.worker_enabled, False),
    ({"ENABLE_SCHEDULER": "false", "WORKER_ENABLED": "true"}, lambda c: c.core.worker_enabled, True),
    ({"ALERT_WARNING_THRESHOLD": "8"}, lambda c: c.core.alerts.warning_threshold, 8),
    ({}, lambda c: c.core.alerts.warning_threshold, 5),
    ({"API_CIRCUIT_BREAKER_THRESHOLD": "9"}, lambda c: c.crm.breaker_threshold, 9),
    ({"API_CIRCUIT_BREAKER_DURATION_MS": "30000"}, lambda c: c.crm.breaker_reset, 30.0),
    ({"CRON_CALL_SCHEDULER": "*/2 * * * *"}, lambda c: c.job("call-scheduler").schedule.text, "*/2 * * * *"),
    ({"CRON_CALL_SCHEDULER": "*/2 * * * *", "SCHEDULE_CALL_SCHEDULER": "45s"},
     lambda c: c.job("call-scheduler").schedule.text, "45s"),
])
def test_a_seed_name_is_read_as_the_project_setting(env, read, expected):
    assert read(config(**env)) == expected


def test_notes_say_which_name_was_used_and_which_mean_nothing():
    notes = config(QUEUE_MAX_RETRIES="7", MAX_RETRIES="6", ENABLE_SCHEDULER="true", WORKER_ENABLED="true",
                   LOG_LEVEL="warn", NODE_ENV="production", WORKER_POLL_INTERVAL_MS="60000").notes
    assert notes == (
        "JOB_MAX_RETRIES taken from QUEUE_MAX_RETRIES (a seed's name for it)",
        "MAX_RETRIES ignored: QUEUE_MAX_RETRIES is used for JOB_MAX_RETRIES",
        "ENABLE_SCHEDULER ignored: WORKER_ENABLED is set and wins",
        "LOG_LEVEL=warn read as warning",
        notes[4], notes[5],
    )
    assert notes[4].startswith("WORKER_POLL_INTERVAL_MS has no meaning here and is ignored: the worker does not poll")
    assert notes[5].startswith("NODE_ENV has no meaning here and is ignored")
    assert config().notes == ()


def test_a_bad_value_under_a_seed_name_is_reported_under_that_name_with_the_others():
    with pytest.raises(ConfigError) as err:
        config(QUEUE_MAX_RETRIES="lots", CRON_NO_SUCH_JOB="* * * * *", LOG_LEVEL="loud")
    text = str(err.value)
    assert "QUEUE_MAX_RETRIES (read as JOB_MAX_RETRIES)=lots: expected an integer" in text
    assert "CRON_NO_SUCH_JOB (read as SCHEDULE_NO_SUCH_JOB)=* * * * *" in text
    assert "LOG_LEVEL=loud: expected one of" in text


def test_check_config_prints_the_seed_names_section(tmp_path):
    env = {"APPLIANCE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LOG_LEVEL": "warn", "NODE_ENV": "production"}
    result = subprocess.run([sys.executable, "-m", "appliance", "check-config"], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("[seed names]\n", 1)[1].split("[jobs]")[0]
    assert section.splitlines()[0] == "  LOG_LEVEL=warn read as warning"
    assert section.splitlines()[1].startswith("  NODE_ENV has no meaning here")
