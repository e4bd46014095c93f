"""The source documents' names for settings this project names otherwise (../shared/seeds: seeds 000-003).

An operator who copies a seed's ``.env`` gets what it means here: a seed's name with the same meaning is read
as the project's own (the project's name wins when both are set), a seed's word for a value is accepted
(``LOG_LEVEL=warn``), and a seed variable with no meaning here is named in ``check-config`` instead of being
ignored in silence. ``EnvReader.notes`` records each of these for ``check-config``. A job pack reads the seeds'
names of its own settings itself (the CRM pack: ``API_CIRCUIT_BREAKER_*``).
"""

from __future__ import annotations

from appliance.config.env import EnvReader

#: The project's name -> the seeds' names for the same setting, the preferred first.
ALIASES: dict[str, tuple[str, ...]] = {
    "JOB_MAX_RETRIES": ("QUEUE_MAX_RETRIES", "MAX_RETRIES"),  # seeds 003, 001
    "JOB_RETRY_BACKOFF_MS": ("QUEUE_RETRY_BACKOFF_MS",),  # seed 003: first retry delay in ms
    "WORKER_ENABLED": ("ENABLE_SCHEDULER",),  # seed 002: the scheduler runs only when enabled
}
#: Seed 003's log levels that the project spells otherwise.
LOG_LEVELS = {"warn": "warning", "verbose": "debug"}
#: Seed 003's per-job schedule override, ``CRON_<JOB>``; the project's is ``SCHEDULE_<JOB>``.
CRON_PREFIX, SCHEDULE_PREFIX = "CRON_", "SCHEDULE_"
MEANINGLESS = {
    "WORKER_POLL_INTERVAL_MS": "the worker does not poll; it sleeps until each job's next slot and wakes at once "
                               "for triggers (set each job's schedule: SCHEDULE_<JOB>)",
    "NODE_ENV": "LOG_FORMAT picks JSON or text logs, and the scheduler runs wherever the worker is enabled "
                "(WORKER_ENABLED, IS_WORKER)",
}


def read_seed_names(env: EnvReader) -> None:
    """Record in ``env`` (before any section reads it) what the seeds' names stand for."""
    for own, seeds in ALIASES.items():
        env.alias(own, *seeds)
    for variable in sorted(env.environ):
        if variable.startswith(CRON_PREFIX) and not variable.endswith("_FILE"):
            env.alias(SCHEDULE_PREFIX + variable.removeprefix(CRON_PREFIX), variable)
    env.alias_value("LOG_LEVEL", LOG_LEVELS)
    for name, why in MEANINGLESS.items():
        env.meaningless(name, why)
