"""The only reader of the environment, and the lowest layer: it imports nothing of the appliance but its errors.

``load_config()`` reads the process environment (and an optional ``.env`` file, whose values never override
the real environment), validates every setting, and returns a frozen ``Config``. All problems are collected
and raised together as one ``ConfigError``; entry points turn it into exit code 2.

The configuration holds the core's and the sidecar's settings, each job pack's own section (read by the
``settings`` function the pack registers; ``config.crm``, ``config.knowledge``) and the per-job variables as set.
It knows no job: ``appliance.kernel.contract.catalog`` resolves them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from dotenv import dotenv_values

from appliance.config.core import CoreConfig, load_core
from appliance.config.env import EnvReader, redact_url
from appliance.config.jobs import JobEnv, read_job_env
from appliance.config.seed_names import read_seed_names
from appliance.config.sidecar import SidecarConfig, load_sidecar
from appliance.config.tracing import TracingConfig, load_tracing
from appliance.errors import ConfigError

__all__ = ["Config", "ConfigError", "JobEnv", "SettingsSource", "declared_settings", "load_config", "masked",
           "read_config", "redact_url", "set_process_env"]

#: Names that ``Config.masked`` leaves out: the secret registry's sources and what is shown elsewhere.
_HIDDEN = frozenset({"secret_names", "withheld_secrets", "url_names", "secret_values", "url_values", "func",
                     "sections", "packs", "job_env"})


class SettingsSource(Protocol):
    """What the configuration needs of a job pack (``appliance.kernel.contract.packs.Pack``): its name, which names its
    section (``config.<name>``), and the function that reads that section."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> Callable[[EnvReader], object] | None: ...


@dataclass(frozen=True)
class Config:
    core: CoreConfig
    sidecar: SidecarConfig
    #: The names of the job packs this configuration was loaded with, and their sections by name.
    packs: tuple[str, ...] = ()
    sections: tuple[tuple[str, Any], ...] = ()
    #: ``SCHEDULE_<JOB>`` and the other per-job variables, for the catalog to check against the jobs.
    job_env: JobEnv = field(default_factory=JobEnv)
    secret_names: frozenset[str] = frozenset()
    #: Secrets the operator set that ``appliance run`` did not give this program (they read as unset).
    withheld_secrets: frozenset[str] = frozenset()
    url_names: frozenset[str] = frozenset()
    #: (name, value) of every declared secret that is set, and of every URL setting: what
    #: ``appliance.kernel.runtime.redaction.Redactor.from_config`` masks. Never printed (``masked`` leaves them out).
    secret_values: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    url_values: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: What ``check-config`` says about the seeds' names: which was read for which setting, which mean nothing.
    notes: tuple[str, ...] = ()
    #: OpenTelemetry tracing (``OTEL_*``): off unless an exporter is set (``appliance.kernel.runtime.tracing``).
    tracing: TracingConfig = field(default_factory=TracingConfig)

    def __getattr__(self, name: str) -> Any:
        """A job pack's section by the pack's name: ``config.crm``."""
        if not name.startswith("_"):
            for section, value in self.__dict__.get("sections", ()):
                if section == name:
                    return value
        raise AttributeError(f"{type(self).__name__!r} has no attribute or job pack section {name!r}")


def set_process_env(name: str, value: str) -> None:
    """Export a variable to this process and its children (used for libraries that read the environment
    themselves at import time, such as prometheus_client's multiprocess directory)."""
    os.environ[name] = value


def process_environment() -> dict[str, str]:
    """This process's environment as it is, for the launcher that hands each supervised program its share."""
    return dict(os.environ)


def pin_home() -> None:
    """Make an exported relative ``APPLIANCE_HOME`` absolute against the current directory, so that a command
    which changes directory before reading the configuration still means the folder its user meant."""
    home = os.environ.get("APPLIANCE_HOME")
    if home:
        set_process_env("APPLIANCE_HOME", str(Path(home).absolute()))


def read_config(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env",
                packs: Iterable[SettingsSource] = ()) -> tuple[Config, list[str]]:
    """The configuration and its problems; a bad value reads as its default, so that whoever resolves the jobs
    can add their problems and report every one at once."""
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    env = EnvReader(values)
    return _read(env, packs), env.problems


def _read(env: EnvReader, packs: Iterable[SettingsSource]) -> Config:
    read_seed_names(env)
    core, sidecar, tracing = load_core(env), load_sidecar(env), load_tracing(env)
    # The alerter warns when a job turns stale by the same measure as /health.
    core = replace(core, alerts=replace(core.alerts, stale_factor=sidecar.stale_factor))
    packs = list(packs)
    sections = tuple((pack.name, pack.settings(env)) for pack in packs if pack.settings is not None)
    return Config(core=core, sidecar=sidecar, packs=tuple(pack.name for pack in packs), sections=sections,
                  job_env=read_job_env(env), secret_names=frozenset(env.secret_names),
                  withheld_secrets=env.withheld, url_names=frozenset(env.url_names),
                  secret_values=tuple(sorted(env.secret_values.items())),
                  url_values=tuple(sorted(env.url_values.items())), notes=tuple(env.notes),
                  tracing=tracing)


def declared_settings(packs: Iterable[SettingsSource] = ()) -> dict[str, str]:
    """Every setting the configuration reads (the core's, the sidecar's, each of ``packs``'), with its default as
    an operator would write it ("" when it has none), as read from an empty environment: what the README's
    tables must list. Defaults that depend on ``APPLIANCE_HOME`` name it as ``$APPLIANCE_HOME``."""
    env = EnvReader({})
    config = _read(env, packs)
    home = str(config.core.home)
    return {name: default.replace(home, "$APPLIANCE_HOME") for name, default in env.defaults.items()}


def load_config(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env",
                packs: Iterable[SettingsSource] = ()) -> Config:
    """Read, validate and return the configuration with the sections of ``packs`` (entry points pass every
    installed pack: ``appliance.kernel.contract.packs.load_settings``); raise ``ConfigError`` listing every problem."""
    config, problems = read_config(environ, env_file, packs)
    if problems:
        raise ConfigError(problems)
    return config


def masked(value: Any) -> Any:
    """A configuration (or any part of it, or a job's settings) as plain data, secrets masked and URL passwords
    redacted; each job pack's section appears under the pack's name."""

    def convert(value: Any, key: str = "") -> Any:
        if hasattr(value, "describe"):
            return value.text
        if hasattr(value, "to_json"):  # a job's schedule policy: its JSON form (calendars' definitions whole)
            return convert(value.to_json())
        if is_dataclass(value) and not isinstance(value, type):
            doc = {f.name: convert(getattr(value, f.name), f.name) for f in fields(value) if f.name not in _HIDDEN}
            if isinstance(value, Config):
                notes = doc.pop("notes")
                doc.update({name: convert(section) for name, section in value.sections})
                doc["notes"] = notes
            return doc
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, str):
            if value and any(word in key for word in ("token", "secret", "api_key", "password", "webhook", "headers")):
                return "***"
            return redact_url(value)
        return value

    return convert(value)
