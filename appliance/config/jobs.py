"""Per-job settings: built-in specs and ``APPLIANCE_JOBS_FILE`` tables, overridden from the environment.

For a job named ``call-scheduler`` the variables are ``SCHEDULE_CALL_SCHEDULER``, ``TIMEZONE_CALL_SCHEDULER``,
``LOCK_TTL_CALL_SCHEDULER``, ``MAX_RETRIES_CALL_SCHEDULER``, ``GRACE_CALL_SCHEDULER`` and
``ENABLED_CALL_SCHEDULER``; the same keys (lower case, without the suffix) are read from a TOML table.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config.env import EnvReader
from appliance.errors import ScheduleError
from appliance.jobspec import JobFunc, JobSpec

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.schedules import Schedule

JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: Settings of other sections that share a per-job prefix; they name no job.
NOT_JOB_SETTINGS = frozenset({"SCHEDULE_TIMEZONE"})
TOML_KEYS = {"callable", "schedule", "lock_ttl", "max_retries", "grace", "timezone", "enabled", "description", "needs"}


@dataclass(frozen=True)
class JobSettings:
    """A job as this worker will run it."""

    name: str
    func: JobFunc
    schedule: "Schedule"
    timezone: str
    lock_ttl: float
    max_retries: int
    grace: float
    enabled: bool
    needs: tuple[str, ...]
    description: str
    source: str

    @property
    def period(self) -> float:
        return self.schedule.period.total_seconds()


def env_suffix(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def load_custom_specs(path: Path, env: EnvReader) -> list[JobSpec]:
    """``[jobs.NAME]`` tables of a TOML file as specs; every bad table is reported."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        env.problem("APPLIANCE_JOBS_FILE", path, f"a valid TOML file ({exc})")
        return []
    specs = []
    for name, table in (data.get("jobs") or {}).items():
        where = f"{path}[jobs.{name}]"
        if not JOB_NAME.match(name) or not isinstance(table, dict):
            env.problem(where, name, "a job name of lower-case letters, digits, '-' or '_' with a table of settings")
            continue
        unknown = set(table) - TOML_KEYS
        if unknown:
            env.problem(where, ", ".join(sorted(unknown)), "only the keys " + ", ".join(sorted(TOML_KEYS)))
        func = _import_callable(table.get("callable"), where, env)
        if func is None or "schedule" not in table:
            if "schedule" not in table:
                env.problem(f"{where}.schedule", "(missing)", "a schedule such as 30s, 02:00 or '*/5 * * * *'")
            continue
        specs.append(
            JobSpec(
                name=name,
                func=func,
                schedule=str(table["schedule"]),
                description=str(table.get("description", "")),
                needs=tuple(table.get("needs", ())),
                lock_ttl=_number(table, "lock_ttl", where, env),
                max_retries=_number(table, "max_retries", where, env, integer=True),
                grace=_number(table, "grace", where, env),
                timezone=table.get("timezone"),
                enabled=bool(table.get("enabled", True)),
                extra={"source": str(path)},
            )
        )
    return specs


def _number(table: dict[str, Any], key: str, where: str, env: EnvReader, integer: bool = False) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (integer and not isinstance(value, int)):
        env.problem(f"{where}.{key}", value, "a non-negative " + ("integer" if integer else "number of seconds"))
        return None
    return value


def _import_callable(target: Any, where: str, env: EnvReader) -> JobFunc | None:
    if not isinstance(target, str) or ":" not in target:
        env.problem(f"{where}.callable", target, "'package.module:function'")
        return None
    module_name, _, attr = target.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        env.problem(f"{where}.callable", target, f"an importable function ({exc})")
        return None
    if not callable(func):
        env.problem(f"{where}.callable", target, "a callable")
        return None
    return func


def resolve_jobs(specs: list[JobSpec], config: "Config", env: EnvReader) -> tuple[JobSettings, ...]:
    """Apply environment overrides and ``JOBS_ENABLED`` to ``specs``; parse every schedule."""
    from appliance.schedules import parse_schedule

    core = config.core
    names = {spec.name for spec in specs}
    for wanted in core.jobs_enabled:
        if wanted not in names:
            env.problem("JOBS_ENABLED", ",".join(core.jobs_enabled), "known job names: " + ", ".join(sorted(names)))
            break
    _unknown_schedules(names, env)
    resolved = []
    for spec in specs:
        suffix = env_suffix(spec.name)
        tz = env.tz(f"TIMEZONE_{suffix}", spec.timezone or core.schedule_timezone)
        override = env.raw(f"SCHEDULE_{suffix}")
        text = override or spec.default_schedule(config)
        try:
            schedule = parse_schedule(text, tz=tz)
        except ScheduleError as exc:
            where = f"SCHEDULE_{suffix}" if override else f"{spec.extra.get('source', 'built-in')}[jobs.{spec.name}].schedule"
            env.invalid(where, text, exc.reason)
            schedule = parse_schedule("1h", tz="UTC")
        enabled = env.bool(f"ENABLED_{suffix}", spec.enabled)
        if core.jobs_enabled:
            enabled = enabled and spec.name in core.jobs_enabled
        period = schedule.period.total_seconds()
        resolved.append(
            JobSettings(
                name=spec.name,
                func=spec.func,
                schedule=schedule,
                timezone=tz,
                lock_ttl=env.duration(f"LOCK_TTL_{suffix}", spec.lock_ttl or core.lock_ttl, unit="s", min=0.3),
                max_retries=env.int(f"MAX_RETRIES_{suffix}", spec.max_retries if spec.max_retries is not None else core.max_retries, min=0, max=20),
                grace=env.duration(f"GRACE_{suffix}", spec.grace if spec.grace is not None else period, unit="s", min=0.0),
                enabled=enabled,
                needs=spec.needs,
                description=spec.description,
                source=spec.extra.get("source", "built-in"),
            )
        )
    return tuple(resolved)


def _unknown_schedules(names: set[str], env: EnvReader) -> None:
    """``SCHEDULE_<JOB>`` naming no job is a problem like any other: a typo there would otherwise leave the
    job on its default schedule without a word."""
    suffixes = {env_suffix(name) for name in names}
    for variable in sorted(env.environ):
        job = variable.removeprefix("SCHEDULE_")
        if job == variable or variable in NOT_JOB_SETTINGS or job in suffixes or job.removesuffix("_FILE") in suffixes:
            continue
        env.problem(variable, env.environ[variable],
                    "SCHEDULE_<JOB> of an existing job: " + ", ".join(f"SCHEDULE_{s}" for s in sorted(suffixes)))


def with_schedule(job: JobSettings, text: str) -> JobSettings:
    """A copy of ``job`` on another schedule (used by tests and benchmarks)."""
    from appliance.schedules import parse_schedule

    schedule = parse_schedule(text, tz=job.timezone)
    return replace(job, schedule=schedule, grace=schedule.period.total_seconds())
