"""The catalog: every job this appliance knows, resolved from the job packs, ``APPLIANCE_JOBS_FILE`` and the
per-job variables.

For a job named ``call-scheduler`` the variables are ``SCHEDULE_CALL_SCHEDULER``, ``TIMEZONE_CALL_SCHEDULER``,
``LOCK_TTL_CALL_SCHEDULER``, ``MAX_RETRIES_CALL_SCHEDULER``, ``GRACE_CALL_SCHEDULER`` and
``ENABLED_CALL_SCHEDULER``; the same keys (lower case, without the suffix) are read from a TOML table. Only the
processes that run or show jobs resolve them (the worker, ``check-config``, ``jobs run``, ``knowledge reindex``,
``audit``): the others never import a job, nor the jobs file, so a broken one does not block them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Config, read_config
from appliance.config.env import EnvReader
from appliance.errors import ConfigError, ScheduleError
from appliance.kernel.contract.jobspec import JobFunc, JobSpec
from appliance.kernel.contract.packs import Pack, installed_packs, load_attribute, packs_of
from appliance.kernel.contract.params import Param, declare
from appliance.kernel.contract.policy import DEFAULT_POLICY, Policy, read_calendars, read_policy, unknown_job_variables
from appliance.kernel.contract.policy import KEYS as POLICY_KEYS
from appliance.kernel.contract.retention import DEFAULT as DEFAULT_RETENTION
from appliance.kernel.contract.retention import KEYS as RETENTION_KEYS
from appliance.kernel.contract.retention import Retention
from appliance.kernel.contract.retention import declare as declare_retention
from appliance.kernel.schedule.model import Schedule, parse_schedule

JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TOML_KEYS = {"callable", "schedule", "lock_ttl", "max_retries", "grace", "timezone", "enabled", "description", "needs",
             *POLICY_KEYS, "params", *RETENTION_KEYS}


@dataclass(frozen=True)
class JobSettings:
    """A job as this worker will run it."""

    name: str
    func: JobFunc
    schedule: Schedule
    timezone: str
    lock_ttl: float
    max_retries: int
    grace: float
    enabled: bool
    needs: tuple[str, ...]
    description: str
    source: str
    #: Overlap, jitter, calendars, timeout and isolation (``appliance.kernel.contract.policy``).
    policy: Policy = DEFAULT_POLICY
    #: The parameters a trigger may give (``appliance.kernel.contract.params``).
    params: tuple[Param, ...] = ()
    #: How long the ledger keeps its history (``appliance.kernel.contract.retention``).
    retention: Retention = DEFAULT_RETENTION

    @property
    def period(self) -> float:
        return self.schedule.period.total_seconds()


@dataclass(frozen=True)
class Jobs:
    """The resolved jobs, in the packs' order and then the jobs file's."""

    all: tuple[JobSettings, ...] = ()

    def __iter__(self) -> Iterator[JobSettings]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)

    def job(self, name: str) -> JobSettings:
        for job in self.all:
            if job.name == name:
                return job
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [job.name for job in self.all]

    @property
    def enabled(self) -> tuple[JobSettings, ...]:
        return tuple(job for job in self.all if job.enabled)


def env_suffix(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def load_jobs(config: Config) -> Jobs:
    """The jobs of ``config``'s packs and jobs file with their overrides; ``ConfigError`` lists every problem."""
    jobs, problems = resolve(config)
    if problems:
        raise ConfigError(problems)
    return jobs


def load_config_and_jobs(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env",
                         packs: Sequence[Pack] | None = None) -> tuple[Config, Jobs]:
    """The configuration with every installed pack (or ``packs``) and its jobs; ``ConfigError`` lists the
    problems of both together."""
    config, problems = read_config(environ, env_file, installed_packs() if packs is None else packs)
    jobs, job_problems = resolve(config)
    if problems or job_problems:
        raise ConfigError([*problems, *job_problems])
    return config, jobs


def resolve(config: Config) -> tuple[Jobs, list[str]]:
    """The jobs and the problems found while resolving them."""
    env = config.job_env.reader()
    specs = [spec for pack in packs_of(config) for spec in pack.job_specs()]
    jobs_file = config.core.jobs_file
    if jobs_file is not None:
        custom = load_custom_specs(jobs_file, env)
        clash = {s.name for s in custom} & {s.name for s in specs}
        for name in sorted(clash):
            env.problem(f"{jobs_file}[jobs.{name}]", name, "a name not used by a built-in job")
        specs += [s for s in custom if s.name not in clash]
    return Jobs(resolve_specs(specs, config, env)), env.problems


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
        spec = _custom_spec(name, table, path, env)
        if spec is not None:
            specs.append(spec)
    return specs


def _custom_spec(name: str, table: dict[str, Any], path: Path, env: EnvReader) -> JobSpec | None:
    where = f"{path}[jobs.{name}]"
    unknown = set(table) - TOML_KEYS
    if unknown:
        env.problem(where, ", ".join(sorted(unknown)), "only the keys " + ", ".join(sorted(TOML_KEYS)))
    func = _import_callable(table.get("callable"), where, env)
    if "schedule" not in table:
        env.problem(f"{where}.schedule", "(missing)", "a schedule such as 30s, 02:00 or '*/5 * * * *'")
    params: tuple[Param, ...] = ()
    if "params" in table:
        if isinstance(table["params"], dict):
            params, problems = declare(table["params"], where)
            for problem in problems:
                env.problems.append(problem)
        else:
            env.problem(f"{where}.params", table["params"], "a table of parameters")
    retention, problems = declare_retention(table, where)
    env.problems.extend(problems)
    if func is None or "schedule" not in table:
        return None
    return JobSpec(
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
        options={key: table[key] for key in POLICY_KEYS if key in table},
        extra={"source": str(path), "retention": retention},
        params=params,
    )


def _number(table: dict[str, Any], key: str, where: str, env: EnvReader, integer: bool = False) -> Any:
    value = table.get(key)
    if value is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or value < 0 or (integer and not isinstance(value, int)):
        env.problem(f"{where}.{key}", value, "a non-negative " + ("integer" if integer else "number of seconds"))
        return None
    return value


def _import_callable(target: Any, where: str, env: EnvReader) -> JobFunc | None:
    if not isinstance(target, str) or ":" not in target:
        env.problem(f"{where}.callable", target, "'package.module:function'")
        return None
    try:
        func = load_attribute(target)
    except (ImportError, AttributeError) as exc:
        env.problem(f"{where}.callable", target, f"an importable function ({exc})")
        return None
    if not callable(func):
        env.problem(f"{where}.callable", target, "a callable")
        return None
    return func


def resolve_specs(specs: list[JobSpec], config: Config, env: EnvReader) -> tuple[JobSettings, ...]:
    """Apply the per-job variables and ``JOBS_ENABLED`` to ``specs``; parse every schedule."""
    names = {spec.name for spec in specs}
    for wanted in config.core.jobs_enabled:
        if wanted not in names:
            env.problem("JOBS_ENABLED", ",".join(config.core.jobs_enabled),
                        "known job names: " + ", ".join(sorted(names)))
            break
    _unknown_schedules(names, env)
    unknown_job_variables({env_suffix(name) for name in names}, env)
    calendars = read_calendars(config.core.jobs_file, env)
    return tuple(_settings(spec, config, env, calendars) for spec in specs)


def _settings(spec: JobSpec, config: Config, env: EnvReader, calendars: Mapping[str, Any]) -> JobSettings:
    core = config.core
    suffix = env_suffix(spec.name)
    tz = env.tz(f"TIMEZONE_{suffix}", spec.timezone or core.schedule_timezone)
    override = env.raw(f"SCHEDULE_{suffix}")
    text = override or spec.default_schedule(config)
    try:
        schedule = parse_schedule(text, tz=tz)
    except ScheduleError as exc:
        source = spec.extra.get("source", "built-in")
        where = f"SCHEDULE_{suffix}" if override else f"{source}[jobs.{spec.name}].schedule"
        env.invalid(where, text, exc.reason)
        schedule = parse_schedule("1h", tz="UTC")
    enabled = env.bool(f"ENABLED_{suffix}", spec.enabled)
    if core.jobs_enabled:
        enabled = enabled and spec.name in core.jobs_enabled
    max_retries = spec.max_retries if spec.max_retries is not None else core.max_retries
    grace = spec.grace if spec.grace is not None else schedule.period.total_seconds()
    return JobSettings(
        name=spec.name,
        func=spec.func,
        schedule=schedule,
        timezone=tz,
        lock_ttl=env.duration(f"LOCK_TTL_{suffix}", spec.lock_ttl or core.lock_ttl, unit="s", min=0.3),
        max_retries=env.int(f"MAX_RETRIES_{suffix}", max_retries, min=0, max=20),
        grace=env.duration(f"GRACE_{suffix}", grace, unit="s", min=0.0),
        enabled=enabled,
        needs=spec.needs,
        description=spec.description,
        source=spec.extra.get("source", "built-in"),
        policy=read_policy(spec.options, env, suffix, f"{spec.extra.get('source', 'built-in')}[jobs.{spec.name}]",
                           calendars, schedule.period.total_seconds(), spec.func),
        params=spec.params,
        retention=spec.extra.get("retention", DEFAULT_RETENTION),
    )


def _unknown_schedules(names: set[str], env: EnvReader) -> None:
    """``SCHEDULE_<JOB>`` naming no job is a problem like any other: a typo there would otherwise leave the
    job on its default schedule without a word."""
    suffixes = {env_suffix(name) for name in names}
    for variable in sorted(env.environ):
        job = variable.removeprefix("SCHEDULE_")
        if job == variable or job in suffixes or job.removesuffix("_FILE") in suffixes:
            continue
        env.problem(variable, env.environ[variable],
                    "SCHEDULE_<JOB> of an existing job: " + ", ".join(f"SCHEDULE_{s}" for s in sorted(suffixes)))
