"""Typed reading of environment variables that collects every problem instead of stopping at the first.

Sections of the configuration (core, sidecar, and each job pack's) each take an ``EnvReader`` and read their
variables through it; ``appliance.config.load_config`` raises one ``ConfigError`` listing all problems.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

T = TypeVar("T")
# The typed getters of EnvReader are named after the types they return (env.str, env.int, ...), so inside the
# class those names mean the methods: its signatures spell the types as builtins.str and so on.

#: Set by ``appliance.supervise.launch``: secrets the operator set that this program is not given. They
#: read as unset (no check, no credential can match them); ``withheld`` tells that they are set elsewhere.
WITHHELD_NAMES = "APPLIANCE_WITHHELD_SECRETS"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class EnvReader:
    """Reads variables from ``environ``; ``NAME_FILE`` supplies a secret from a file.

    Every getter returns a usable default when the value is bad, after recording the problem, so a section
    can finish building and all problems are reported together.
    """

    def __init__(self, environ: Mapping[str, str]):
        self.environ = dict(environ)
        self.problems: list[str] = []
        self.secret_names: set[str] = set()
        self.withheld = frozenset(n for n in self.environ.get(WITHHELD_NAMES, "").split(",") if n)
        #: Values of the declared secrets and of every URL setting, by name: the secret registry's source.
        self.secret_values: dict[str, str] = {}
        self.url_values: dict[str, str] = {}
        #: Every URL setting read, set or not (its password is a secret wherever it is shown).
        self.url_names: set[str] = set()
        #: Seed names read in place of the project's own (own name -> seed name), and what ``check-config``
        #: says about the seeds' names (which was used, which has no meaning here).
        self.origin: dict[str, str] = {}
        self.notes: list[str] = []
        #: Every name a section asked for, set or not: such a name is a setting, not a per-job override.
        self.read: set[str] = set()
        #: Every setting read, with its default as an operator would write it ("" when it has none): what the
        #: README's tables of settings must list (``appliance.config.declared_settings``).
        self.defaults: dict[str, str] = {}

    # -- raw access -----------------------------------------------------------------------------------
    def raw(self, name: str) -> str | None:
        """The value of ``name``, or the contents of the file named by ``NAME_FILE``; None when unset."""
        self.read.add(name)
        self.defaults.setdefault(name, "")
        file_name = self.environ.get(f"{name}_FILE")
        if file_name:
            try:
                return Path(file_name).read_text().strip()
            except OSError as exc:
                self.problem(f"{name}_FILE", file_name, f"a readable file ({exc.strerror})")
                return None
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def problem(self, name: str, value: object, expected: str, secret: bool = False) -> None:
        shown = "***" if secret else str(value)
        self.problems.append(f"{self._named(name)}={shown}: expected {expected}")

    def invalid(self, name: str, value: object, message: str) -> None:
        """Record a problem whose ``message`` says itself what was expected."""
        self.problems.append(f"{self._named(name)}={value}: {message}")

    def _named(self, name: str) -> str:
        """The variable the operator set: a seed's name read in place of ``name`` is shown as such."""
        return f"{self.origin[name]} (read as {name})" if name in self.origin else name

    def _declare(self, name: str, default: object) -> None:
        self.defaults[name] = default if isinstance(default, str) else _written(default)

    # -- the seeds' names ---------------------------------------------------------------------------------
    def alias(self, own: str, *seed_names: str, convert: Callable[[str], str] = str.strip,
              same: Callable[[str, str], bool] | None = None) -> None:
        """Read the first of ``seed_names`` that is set as ``own`` when ``own`` is not set; ``convert`` turns a
        seed's value into the project's form (its unit). Every other name that is set must mean the same value
        (``same``; default: the same text): two names of one setting set otherwise are a problem naming both,
        never a silent choice. ``notes`` says which name was used."""
        given = [(name, convert(value)) for name in seed_names if (value := (self.environ.get(name) or "").strip())]
        if not given:
            return
        same = same or _same_text
        own_value = self.peek(own)
        if own_value is not None:
            used, value, rivals = own, own_value, given
        else:
            (used, value), *rivals = given
            self.environ[own] = value
            self.origin[own] = used
            self.notes.append(f"{own} taken from {used} (a seed's name for it)")
        for name, other in rivals:
            if same(other, value):
                self.notes.append(f"{name} ignored: {used} is used for {own}, with the same value")
            else:
                self.conflict(name, self.environ[name], used, self.peek(used) or value, own)

    def conflict(self, name: str, value: str, used: str, used_value: str, own: str) -> None:
        """``name`` and ``used`` both set ``own``, to different values: the operator must keep one."""
        setting = "" if used == own else f" ({own})"
        self.problems.append(f"{name}={redact_url(value.strip())} and {used}={redact_url(used_value)} are one setting"
                             f"{setting} set twice, differently: keep one of them")

    def peek(self, name: str) -> str | None:
        """The value of ``name`` (or of its ``NAME_FILE``) without reading it as a setting; None when unset."""
        value = (self.environ.get(name) or "").strip()
        file_name = self.environ.get(f"{name}_FILE")
        if not value and file_name:
            try:
                value = Path(file_name).read_text().strip()
            except OSError:
                return None  # the setting's own reading reports it
        return value or None

    def alias_value(self, name: str, values: Mapping[str, str]) -> None:
        """Accept a seed's word for a value (``LOG_LEVEL=warn``) as the project's (``warning``)."""
        value = (self.environ.get(name) or "").strip()
        if value.lower() in values:
            self.environ[name] = values[value.lower()]
            self.notes.append(f"{name}={value} read as {values[value.lower()]}")

    def meaningless(self, name: str, why: str) -> None:
        """A seed's variable with no meaning here: one line in ``check-config`` instead of silence."""
        if (self.environ.get(name) or "").strip():
            self.notes.append(f"{name} has no meaning here and is ignored: {why}")

    def _typed(self, name: str, default: T, expected: str, convert: Callable[[str], T]) -> T:
        self._declare(name, default)
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except (ValueError, TypeError):
            self.problem(name, value, expected, secret=name in self.secret_names)
            return default

    # -- typed getters --------------------------------------------------------------------------------
    def typed(self, name: builtins.str, default: T, convert: Callable[[builtins.str], T],
              expected: builtins.str) -> T:
        """A value of a section's own type: ``convert`` raises ``ValueError`` on a bad value."""
        return self._typed(name, default, expected, convert)

    def str(self, name: builtins.str, default: builtins.str = "",
            choices: tuple[builtins.str, ...] | None = None) -> builtins.str:
        self._declare(name, default)
        value = self.raw(name)
        if value is None:
            return default
        if choices and value.lower() not in choices:
            self.problem(name, value, "one of " + ", ".join(choices))
            return default
        return value.lower() if choices else value

    def secret(self, name: builtins.str, default: builtins.str = "") -> builtins.str:
        """A secret: masked in ``check-config`` and in every error message."""
        self.secret_names.add(name)
        self._declare(name, default)
        if name in self.withheld:
            return default
        value = self.raw(name)
        if value is not None:
            self.secret_values[name] = value
        return default if value is None else value

    def int(self, name: builtins.str, default: builtins.int, min: builtins.int | None = None,
            max: builtins.int | None = None) -> builtins.int:
        bounds = _bounds_text(min, max)
        value = self._typed(name, default, f"an integer{bounds}", lambda v: int(v, 10))
        if (min is not None and value < min) or (max is not None and value > max):
            self.problem(name, value, f"an integer{bounds}")
            return default
        return value

    def float(self, name: builtins.str, default: builtins.float, min: builtins.float | None = None,
              max: builtins.float | None = None) -> builtins.float:
        bounds = _bounds_text(min, max)
        value = self._typed(name, default, f"a number{bounds}", float)
        if (min is not None and value < min) or (max is not None and value > max):
            self.problem(name, value, f"a number{bounds}")
            return default
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        def convert(v: str) -> bool:
            lowered = v.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(v)

        return self._typed(name, default, "true or false", convert)

    def duration(self, name: builtins.str, default: builtins.float, unit: builtins.str = "s",
                 min: builtins.float | None = None) -> builtins.float:
        """A duration in seconds. A bare number is in ``unit`` (seed 004 gives ms, s or min per variable);
        a suffix (``500ms``, ``30s``, ``5m``, ``1h``, ``1d``) overrides it."""

        def convert(v: str) -> float:
            return duration_seconds(v, unit)

        expected = f"a duration like 30, 500ms, 30s, 5m or 1h (bare numbers in {unit})"
        if min is not None:
            expected += f", at least {min:g}s"
        value = self._typed(name, default, expected, convert)
        self._declare(name, default / _UNIT_SECONDS[unit])  # as an operator writes it: in ``unit``
        if min is not None and value < min:
            self.problem(name, self.raw(name), expected)
            return default
        return value

    def url(self, name: builtins.str, default: builtins.str, schemes: tuple[builtins.str, ...],
            secret_password: builtins.bool = True) -> builtins.str:
        """A URL whose scheme is one of ``schemes``; its password is masked wherever it is shown."""
        self.url_names.add(name)
        self._declare(name, default)
        value = self.raw(name)
        if value is None:
            return default
        if secret_password:
            self.url_values[name] = value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
            ok = parts.scheme in schemes and (bool(parts.netloc) or bool(parts.path) or bool(parts.query))
        except ValueError:
            ok = False
        if not ok:
            self.problem(name, redact_url(value), "a URL starting with " + " or ".join(f"{s}://" for s in schemes))
            return default
        return value

    def tz(self, name: builtins.str, default: builtins.str = "UTC") -> builtins.str:
        self._declare(name, default)
        value = self.raw(name)
        if value is None:
            return default
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(name, value, "an IANA time zone such as UTC or Europe/Paris")
            return default
        return value

    def csv(self, name: builtins.str, default: tuple[builtins.str, ...] = ()) -> tuple[builtins.str, ...]:
        self._declare(name, ",".join(default))
        value = self.raw(name)
        if value is None:
            return default
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def path(self, name: builtins.str, default: builtins.str) -> Path:
        self._declare(name, default)
        value = self.raw(name)
        return Path(value if value is not None else default)


def _written(default: object) -> str:
    """A default as an operator writes it: ``true``, ``30``, ``0.8``, ``5%``."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    describe = getattr(default, "describe", None)
    return str(describe()) if callable(describe) else str(default)


def duration_seconds(text: str, unit: str) -> float:
    """``text`` as ``EnvReader.duration`` reads it (bare numbers in ``unit``); raises ``ValueError``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or unit]


def _same_text(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def _bounds_text(min: object, max: object) -> str:
    if min is not None and max is not None:
        return f" from {min} to {max}"
    if min is not None:
        return f" >= {min}"
    if max is not None:
        return f" <= {max}"
    return ""


_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)")
_QUERY_SECRET = re.compile(r"(?i)(?P<head>[?&](?:[a-z_]*password|api_key|apikey|token|secret)=)(?P<pw>[^&\s]+)")


def redact_url(text: str) -> str:
    """``text`` with passwords in URLs (``scheme://user:PASSWORD@host``) and secret query values masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***{m.group('at')}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('head')}***", text)
