"""The per-job variables, kept as set: ``SCHEDULE_<JOB>``, ``TIMEZONE_<JOB>``, ``LOCK_TTL_<JOB>``,
``MAX_RETRIES_<JOB>``, ``GRACE_<JOB>`` and ``ENABLED_<JOB>`` (``CRON_<JOB>``, seed 003's name, is read as
``SCHEDULE_<JOB>``).

Which jobs exist is known only where jobs are resolved (``appliance.kernel.contract.catalog``): there these values are
read, checked, and a ``SCHEDULE_<JOB>`` naming no job is reported with every other problem.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config.env import EnvReader

PREFIXES = ("SCHEDULE_", "TIMEZONE_", "LOCK_TTL_", "MAX_RETRIES_", "GRACE_", "ENABLED_",
            # The schedule policy's (appliance.kernel.contract.policy.ENV_PREFIXES).
            "OVERLAP_", "MAX_CONCURRENT_", "JITTER_", "TIMEOUT_", "ISOLATION_", "CALENDAR_", "HOLIDAYS_", "BLACKOUT_")


@dataclass(frozen=True)
class JobEnv:
    """The per-job variables (``NAME_FILE`` forms included) and the seed's name each was read from."""

    values: tuple[tuple[str, str], ...] = ()
    origin: tuple[tuple[str, str], ...] = ()

    def reader(self) -> EnvReader:
        """An ``EnvReader`` over these variables, naming a seed's variable as the operator set it."""
        env = EnvReader(dict(self.values))
        env.origin.update(self.origin)
        return env


def read_job_env(env: EnvReader) -> JobEnv:
    """The per-job variables of ``env``, less those a section of the configuration reads itself (such as
    ``SCHEDULE_TIMEZONE``): call after every section has read its own."""
    values = {name: value for name, value in env.environ.items()
              if name.startswith(PREFIXES) and name.removesuffix("_FILE") not in env.read}
    origin = {name: seed for name, seed in env.origin.items() if name in values}
    return JobEnv(tuple(sorted(values.items())), tuple(sorted(origin.items())))
