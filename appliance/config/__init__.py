"""The only reader of the environment.

``load_config()`` reads the process environment (and an optional ``.env`` file, whose values never override
the real environment), validates every setting, and returns a frozen ``Config``. All problems are collected
and raised together as one ``ConfigError``; entry points turn it into exit code 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from dotenv import dotenv_values

from appliance.config.core import CoreConfig, load_core
from appliance.config.crm import CrmConfig, load_crm
from appliance.config.env import EnvReader, redact_url
from appliance.config.jobs import JobSettings, load_custom_specs, resolve_jobs
from appliance.config.knowledge import KnowledgeConfig, load_knowledge
from appliance.config.seed_names import read_seed_names
from appliance.config.sidecar import SidecarConfig, load_sidecar
from appliance.errors import ConfigError

__all__ = ["Config", "ConfigError", "JobSettings", "load_config", "redact_url", "process_environ"]


@dataclass(frozen=True)
class Config:
    core: CoreConfig
    crm: CrmConfig
    sidecar: SidecarConfig
    knowledge: KnowledgeConfig
    jobs: tuple[JobSettings, ...] = ()
    secret_names: frozenset[str] = frozenset()
    #: Secrets the operator set that ``appliance run`` did not give this program (they read as unset).
    withheld_secrets: frozenset[str] = frozenset()
    url_names: frozenset[str] = frozenset()
    #: (name, value) of every declared secret that is set, and of every URL setting: what
    #: ``appliance.redaction.Redactor.from_config`` masks. Never printed (``masked`` leaves them out).
    secret_values: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    url_values: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: What ``check-config`` says about the seeds' names: which was read for which setting, which mean nothing.
    notes: tuple[str, ...] = ()

    def job(self, name: str) -> JobSettings:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    @property
    def enabled_jobs(self) -> tuple[JobSettings, ...]:
        return tuple(job for job in self.jobs if job.enabled)


def process_environ() -> dict[str, str]:
    """A copy of the process environment, for entry points that pass it to child processes."""
    return dict(os.environ)


def set_process_env(name: str, value: str) -> None:
    """Export a variable to this process and its children (used for libraries that read the environment
    themselves at import time, such as prometheus_client's multiprocess directory)."""
    os.environ[name] = value


def load_config(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env",
                with_jobs: bool = True) -> Config:
    """Read, validate and return the configuration; raise ``ConfigError`` listing every problem."""
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    env = EnvReader(values)
    read_seed_names(env)
    core, sidecar = load_core(env), load_sidecar(env)
    # The alerter warns when a job turns stale by the same measure as /health.
    core = replace(core, alerts=replace(core.alerts, stale_factor=sidecar.stale_factor))
    config = Config(core=core, crm=load_crm(env), sidecar=sidecar, knowledge=load_knowledge(env))
    if with_jobs:
        from appliance.catalog import builtin_specs

        specs = builtin_specs()
        if config.core.jobs_file is not None:
            custom = load_custom_specs(config.core.jobs_file, env)
            clash = {s.name for s in custom} & {s.name for s in specs}
            for name in sorted(clash):
                env.problem(f"{config.core.jobs_file}[jobs.{name}]", name, "a name not used by a built-in job")
            specs += [s for s in custom if s.name not in clash]
        config = Config(**{**_shallow(config), "jobs": resolve_jobs(specs, config, env)})
    if env.problems:
        raise ConfigError(env.problems)
    return Config(**{**_shallow(config), "secret_names": frozenset(env.secret_names),
                     "withheld_secrets": env.withheld, "url_names": frozenset(env.url_names),
                     "secret_values": tuple(sorted(env.secret_values.items())),
                     "url_values": tuple(sorted(env.url_values.items())), "notes": tuple(env.notes)})


def _shallow(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked and URL passwords redacted."""

    def convert(value: Any, key: str = "") -> Any:
        if hasattr(value, "describe"):
            return value.text
        if is_dataclass(value):
            return {f.name: convert(getattr(value, f.name), f.name) for f in fields(value)
                    if f.name not in ("secret_names", "withheld_secrets", "url_names", "secret_values", "url_values",
                                       "func")}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, str):
            if value and any(word in key for word in ("token", "secret", "api_key", "password", "webhook")):
                return "***"
            return redact_url(value)
        return value

    return convert(config)
