"""The registration interface of job packs: what a pack brings, and how the appliance finds the packs.

A job pack (the CRM pack, the knowledge indexer, one of your own) is a ``Pack`` named in the
``appliance.packs`` entry-point group of its distribution::

    [project.entry-points."appliance.packs"]
    reports = "acme_reports:PACK"

The kernel and the processes find packs only through ``installed_packs()`` and never import one by name, so a
third pack plugs in exactly as the built-in ones do. What every start reads is given directly and must be cheap
to import: ``settings`` and ``health``. What imports libraries is named ``"module:attribute"`` and imported only
where it is used: ``jobs`` where jobs are resolved, ``commands`` when the CLI is built, ``backup`` by
``appliance backup`` and ``appliance restore``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from appliance.config import Config, load_config
from appliance.config.env import EnvReader
from appliance.errors import ConfigError
from appliance.kernel.contract.backup import BackupPart
from appliance.kernel.contract.jobspec import JobSpec
from appliance.kernel.runtime.json_object import JsonObject

#: The entry-point group that names every installed pack.
GROUP = "appliance.packs"


@dataclass(frozen=True)
class SeedNames:
    """Seed 004's names of one job in the sidecar's documents: its key in ``/health``'s ``jobs`` and in
    ``/metrics``' ``jobsProcessed`` and ``lastRun``. Jobs without them appear under their own names."""

    health: str
    processed: str
    last_run: str


@dataclass(frozen=True)
class Pack:
    """One job pack.

    - ``name``: names its settings (``config.<name>``, ``check-config``'s ``[<name>]``);
    - ``settings``: reads the pack's variables through the ``EnvReader`` (problems are reported with all others);
    - ``jobs``: ``"module:attribute"`` of its list of ``JobSpec``;
    - ``commands``: ``"module:attribute"`` of a ``register(subparsers)`` adding its CLI subcommands;
    - ``health``: a function of the configuration whose result ``/health`` shows under the pack's name;
    - ``seed_names``: seed 004's names of its jobs in ``/health`` and ``/metrics``;
    - ``migrations``: the package whose ``migrations/NNNN_name.sql`` the pack's tables come from (versions
      must not clash with another pack's: docs/architecture.md lists the ranges taken);
    - ``backup``: ``"module:attribute"`` of a ``appliance.kernel.contract.backup.BackupPart``, for data the pack keeps
      outside PostgreSQL (its tables are in the database's dump already).
    """

    name: str
    settings: Callable[[EnvReader], object] | None = None
    jobs: str | None = None
    commands: str | None = None
    health: Callable[[Config], JsonObject] | None = None
    seed_names: Mapping[str, SeedNames] = field(default_factory=dict)
    migrations: str | None = None
    backup: str | None = None

    def job_specs(self) -> list[JobSpec]:
        return list(load_attribute(self.jobs)) if self.jobs else []

    def register_commands(self, sub: argparse._SubParsersAction) -> None:
        if self.commands:
            load_attribute(self.commands)(sub)

    def backup_part(self) -> BackupPart | None:
        return load_attribute(self.backup) if self.backup else None


def load_attribute(target: str) -> Any:
    """The attribute named by ``"package.module:attribute"``; ``ImportError`` or ``AttributeError`` when none."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@cache
def installed_packs() -> tuple[Pack, ...]:
    """Every pack named in the ``appliance.packs`` entry-point group, by name; ``ConfigError`` (exit 2) when one
    cannot be loaded, since the appliance would otherwise run without its jobs and settings."""
    packs, problems = [], []
    for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
        try:
            pack = point.load()
        except (ImportError, AttributeError) as exc:
            problems.append(f"job pack {point.name} = {point.value}: cannot be loaded ({exc})")
            continue
        if not isinstance(pack, Pack) or pack.name != point.name:
            problems.append(f"job pack {point.name} = {point.value}: expected a Pack named {point.name!r}")
            continue
        packs.append(pack)
    if problems:
        raise ConfigError(problems)
    return tuple(packs)


def packs_of(config: Config) -> tuple[Pack, ...]:
    """The installed packs ``config`` was loaded with (a configuration loaded without packs has none)."""
    return tuple(pack for pack in installed_packs() if pack.name in config.packs)


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env",
                  packs: Sequence[Pack] | None = None) -> Config:
    """``load_config`` with every installed pack's settings (or those of ``packs``)."""
    return load_config(environ, env_file, installed_packs() if packs is None else packs)
