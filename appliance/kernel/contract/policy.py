"""What a job says about its schedule beyond when its slots fall: overlap, jitter, calendars, timeout, isolation.

Each setting is a key of the job's TOML table (or of its ``JobSpec.options``) and a per-job variable that wins
over it, named like ``SCHEDULE_<JOB>``:

| key | variable | values | default |
| --- | --- | --- | --- |
| ``overlap`` | ``OVERLAP_<JOB>`` | skip, buffer_one, buffer_all, cancel_other, allow | skip |
| ``max_concurrent`` | ``MAX_CONCURRENT_<JOB>`` | runs at once under ``allow`` | 1 (2 and up need allow) |
| ``jitter`` | ``JITTER_<JOB>`` | a duration below the schedule's period | 0 |
| ``calendar`` | ``CALENDAR_<JOB>`` | names of ``[calendars.NAME]`` tables (a list, or comma-separated) | none |
| ``holidays`` | ``HOLIDAYS_<JOB>`` | a country, or country-region (``IN``, ``DE-BY``) | none |
| ``blackout`` | ``BLACKOUT_<JOB>`` | windows (a list, or separated by ``;``) | none |
| ``timeout`` | ``TIMEOUT_<JOB>`` | a duration | none |
| ``isolation`` | ``ISOLATION_<JOB>`` | thread, process | thread |

``[calendars.NAME]`` tables of the jobs file hold ``dates``, ``holidays`` (and ``region``), ``blackout`` and
``ics`` (a file's path, relative to the jobs file). Every bad value is a configuration problem (exit 2 with the
others).
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from appliance.config.env import EnvReader, duration_seconds
from appliance.kernel.schedule.calendars import Blackout, Calendar, CalendarError, check_holidays, first_exclusion
from appliance.kernel.schedule.jitter import planned_start

KEYS = frozenset({"overlap", "max_concurrent", "jitter", "timeout", "isolation", "calendar", "holidays",
                  "blackout"})
ENV_PREFIXES = ("OVERLAP_", "MAX_CONCURRENT_", "JITTER_", "TIMEOUT_", "ISOLATION_", "CALENDAR_", "HOLIDAYS_",
                "BLACKOUT_")
CALENDAR_KEYS = frozenset({"dates", "holidays", "region", "blackout", "ics"})
MAX_CONCURRENT = 100


class Overlap(StrEnum):
    """What a slot does when it finds its job running (docs/worker.md "Overlap")."""

    SKIP = "skip"  # recorded skipped_overlap
    BUFFER_ONE = "buffer_one"  # starts when the running one ends; at most one waits, later ones are skipped
    BUFFER_ALL = "buffer_all"  # every such slot waits, and they run in order
    CANCEL_OTHER = "cancel_other"  # the running one stops at its next checkpoint (cancelled_by_newer); this one runs
    ALLOW = "allow"  # runs beside it, under a lease and fence of its own, up to max_concurrent at once


class Isolation(StrEnum):
    THREAD = "thread"  # a thread of the worker: stopped at its checkpoints
    PROCESS = "process"  # a child process the worker can kill: memory and crashes contained


@dataclass(frozen=True)
class Policy:
    overlap: Overlap = Overlap.SKIP
    max_concurrent: int = 1
    jitter: float = 0.0
    timeout: float | None = None
    isolation: Isolation = Isolation.THREAD
    calendars: tuple[Calendar, ...] = ()

    @property
    def buffers(self) -> bool:
        """Whether a slot that finds its job running waits for it (instead of being skipped)."""
        return self.overlap in (Overlap.BUFFER_ONE, Overlap.BUFFER_ALL, Overlap.CANCEL_OTHER)

    @property
    def per_slot(self) -> bool:
        """Runs of different slots hold different leases and fences (``allow``)."""
        return self.overlap is Overlap.ALLOW

    def start_of(self, job: str, slot: datetime) -> datetime:
        """When ``job``'s run of ``slot`` starts (its jitter applied)."""
        return planned_start(job, slot, self.jitter)

    def excluded(self, slot: datetime, zone: ZoneInfo) -> tuple[str, str] | None:
        """(calendar, reason) when a calendar excludes ``slot``; None when it runs."""
        return first_exclusion(self.calendars, slot, zone) if self.calendars else None

    def columns(self) -> dict[str, Any]:
        """The settings as ``appliance jobs list`` and the dashboard show them."""
        return {"overlap": self.overlap.value, "max_concurrent": self.max_concurrent, "jitter": self.jitter,
                "timeout": self.timeout, "isolation": self.isolation.value,
                "calendars": [c.name for c in self.calendars]}

    def to_json(self) -> dict[str, Any]:
        return {**self.columns(), "calendars": [c.to_json() for c in self.calendars]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Policy:
        return cls(overlap=Overlap(data.get("overlap", "skip")), max_concurrent=int(data.get("max_concurrent", 1)),
                   jitter=float(data.get("jitter") or 0), timeout=data.get("timeout"),
                   isolation=Isolation(data.get("isolation", "thread")),
                   calendars=tuple(Calendar.from_json(c) for c in data.get("calendars") or ()))


DEFAULT_POLICY = Policy()


# -- reading ---------------------------------------------------------------------------------------------

def read_calendars(path: Path | None, env: EnvReader) -> dict[str, Calendar]:
    """The ``[calendars.NAME]`` tables of the jobs file; each bad one is a problem (the file's own errors are
    reported where its jobs are read)."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    found = {}
    for name, table in (data.get("calendars") or {}).items():
        where = f"{path}[calendars.{name}]"
        if not isinstance(table, dict):
            env.problem(where, table, "a table of dates, holidays, region, blackout or ics")
            continue
        calendar = _calendar(name, table, path.parent, where, env)
        if calendar is not None:
            found[name] = calendar
    return found


def _calendar(name: str, table: Mapping[str, Any], base: Path, where: str, env: EnvReader) -> Calendar | None:
    unknown = set(table) - CALENDAR_KEYS
    if unknown:
        env.problem(where, ", ".join(sorted(unknown)), "only the keys " + ", ".join(sorted(CALENDAR_KEYS)))
    try:
        dates = frozenset(date.fromisoformat(str(d)) for d in _listed(table.get("dates")))
    except ValueError:
        env.problem(f"{where}.dates", table.get("dates"), "a list of dates like 2026-12-25")
        return None
    country, region = _country(table.get("holidays"), table.get("region"), f"{where}.holidays", env)
    blackouts = _blackouts(_listed(table.get("blackout")), f"{where}.blackout", env)
    ics, source = None, None
    if table.get("ics") is not None:
        source = str(base / str(table["ics"]))
        try:
            ics = Path(source).read_text()
            return Calendar(name, dates, country, region, blackouts, ics, source)
        except OSError as exc:
            env.problem(f"{where}.ics", table["ics"], f"a readable .ics file ({exc.strerror})")
            return None
        except CalendarError as exc:
            env.invalid(f"{where}.ics", table["ics"], str(exc))
            return None
    return Calendar(name, dates, country, region, blackouts)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
    return list(value) if isinstance(value, list) else [value]


def _country(value: Any, region: Any, where: str, env: EnvReader) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    country, _, own_region = str(value).strip().upper().partition("-")
    region = str(region).strip().upper() if region else (own_region or None)
    try:
        check_holidays(country, region)
    except CalendarError as exc:
        env.invalid(where, value, f"{exc}; expected a country code like IN or DE-BY")
        return None, None
    return country, region


def _blackouts(texts: list[Any], where: str, env: EnvReader) -> tuple[Blackout, ...]:
    found = []
    for text in texts:
        try:
            found.append(Blackout.parse(str(text)))
        except CalendarError as exc:
            env.invalid(where, text, str(exc))
    return tuple(found)


def read_policy(options: Mapping[str, Any], env: EnvReader, suffix: str, where: str,
                calendars: Mapping[str, Calendar], period: float, func: Any = None) -> Policy:
    """A job's policy from its ``options`` (TOML keys) and its per-job variables, which win; ``where`` names
    the job's table in problems; ``period`` bounds the jitter."""
    def value(key: str) -> tuple[str, Any]:
        variable = f"{key.upper()}_{suffix}"
        raw = env.raw(variable)
        return (variable, raw) if raw is not None else (f"{where}.{key}", options.get(key))

    name, raw = value("overlap")
    overlap = Overlap.SKIP
    if raw is not None:
        try:
            overlap = Overlap(str(raw).strip().lower())
        except ValueError:
            env.problem(name, raw, "one of " + ", ".join(o.value for o in Overlap))
    max_concurrent = _count(*value("max_concurrent"), env)
    if max_concurrent > 1 and overlap is not Overlap.ALLOW:
        env.problem(value("max_concurrent")[0], max_concurrent, "1, unless overlap = allow")
    jitter = _duration(*value("jitter"), env) or 0.0
    if jitter and jitter >= period:
        env.problem(value("jitter")[0], value("jitter")[1], f"a jitter below the schedule's period ({period:g} s)")
        jitter = 0.0
    timeout = _duration(*value("timeout"), env)
    name, raw = value("isolation")
    isolation = Isolation.THREAD
    if raw is not None:
        try:
            isolation = Isolation(str(raw).strip().lower())
        except ValueError:
            env.problem(name, raw, "thread or process")
    if isolation is Isolation.PROCESS and func is not None and not _importable(func):
        env.problem(name, raw, "thread: isolation = process needs a module-level function the child can import")
        isolation = Isolation.THREAD
    return Policy(overlap, max_concurrent if overlap is Overlap.ALLOW else 1, jitter, timeout, isolation,
                  _job_calendars(value, env, calendars))


def _job_calendars(value: Any, env: EnvReader, calendars: Mapping[str, Calendar]) -> tuple[Calendar, ...]:
    found = []
    name, raw = value("calendar")
    for wanted in _listed(raw):
        if wanted in calendars:
            found.append(calendars[wanted])
        else:
            env.problem(name, wanted, "the name of a [calendars.NAME] table of the jobs file: "
                        + (", ".join(sorted(calendars)) or "none defined"))
    name, raw = value("holidays")
    country, region = _country(raw, None, name, env)
    if country:
        found.append(Calendar(f"holidays:{country}" + (f"-{region}" if region else ""), holidays=country,
                              region=region))
    name, raw = value("blackout")
    blackouts = _blackouts(_listed(raw), name, env)
    if blackouts:
        found.append(Calendar("blackout", blackouts=blackouts))
    return tuple(found)


def _count(name: str, raw: Any, env: EnvReader) -> int:
    if raw is None:
        return 1
    try:
        count = int(str(raw), 10) if not isinstance(raw, int) or isinstance(raw, bool) else raw
    except ValueError:
        count = 0
    if isinstance(raw, bool) or not 1 <= count <= MAX_CONCURRENT:
        env.problem(name, raw, f"an integer from 1 to {MAX_CONCURRENT}")
        return 1
    return count


def _duration(name: str, raw: Any, env: EnvReader) -> float | None:
    if raw is None:
        return None
    try:
        seconds = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else \
            duration_seconds(str(raw), "s")
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        env.problem(name, raw, "a positive duration like 30s, 5m or 1h")
        return None
    return seconds


def _importable(func: Any) -> bool:
    try:
        return getattr(importlib.import_module(func.__module__), func.__qualname__) is func
    except (AttributeError, ImportError, TypeError):
        return False


def unknown_job_variables(suffixes: set[str], env: EnvReader) -> None:
    """``OVERLAP_<JOB>`` and the other per-job variables of this module naming no job are problems: a typo
    would otherwise leave the job on its default without a word."""
    for variable in sorted(env.environ):
        for prefix in ENV_PREFIXES:
            job = variable.removeprefix(prefix)
            if job != variable and job.removesuffix("_FILE") not in suffixes:
                env.problem(variable, env.environ[variable],
                            f"{prefix}<JOB> of an existing job: " + ", ".join(f"{prefix}{s}" for s in sorted(suffixes)))
