"""A job's declared parameters and the values a trigger gives them (``ctx.params``).

A job declares its parameters (``JobSpec(params=(Param("region", "str", "north", choices=(...)),))``, or in the
jobs file ``[jobs.NAME.params]`` with ``region = { type = "str", default = "north", choices = [...] }``). Each has
a type (``str``, ``int``, ``float``, ``bool``) and a default, which a scheduled run gets; ``choices`` limits it to a
list. A trigger's values are checked against the declaration where they are given (the CLI and the admin API:
exit 2 or 400, naming the problem) and again by the worker that runs them (its declaration is the truth), so a
run never sees a parameter of the wrong type, an unknown one, or one outside its choices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.errors import ApplianceError
from appliance.kernel.runtime.json_object import JsonObject

TYPES = ("str", "int", "float", "bool")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ParamError(ApplianceError):
    """Parameters that do not fit a job's declaration; the message names each problem."""


@dataclass(frozen=True)
class Param:
    """One declared parameter: ``name``, ``type`` (str, int, float, bool), the ``default`` a scheduled run gets,
    and optionally the ``choices`` allowed."""

    name: str
    type: str
    default: Any
    choices: tuple[Any, ...] | None = None
    description: str = ""

    def to_json(self) -> JsonObject:
        return {"name": self.name, "type": self.type, "default": self.default,
                "choices": list(self.choices) if self.choices is not None else None, "description": self.description}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Param:
        choices = data.get("choices")
        return cls(name=data["name"], type=data["type"], default=data.get("default"),
                   choices=tuple(choices) if choices is not None else None,
                   description=data.get("description") or "")

    def coerce(self, value: Any) -> Any:
        """``value`` (a JSON value, or the text of ``--param key=value``) as this parameter's type; raises
        ``ValueError`` saying what was expected."""
        converted = _convert(self.type, value)
        if self.choices is not None and converted not in self.choices:
            raise ValueError(f"one of {', '.join(repr(c) for c in self.choices)}, not {value!r}")
        return converted


def _convert(kind: str, value: Any) -> Any:
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ValueError(f"a string, not {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"true or false, not {value!r}")
    if isinstance(value, bool):  # a bool is an int to Python, never to an operator
        raise ValueError(f"a{'n' if kind == 'int' else ''} {kind}, not {value!r}")
    try:
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if isinstance(value, (int, float)) else int(str(value).strip())
        return float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"a{'n' if kind == 'int' else ''} {kind}, not {value!r}") from None


def declare(table: Mapping[str, Any], where: str) -> tuple[tuple[Param, ...], list[str]]:
    """The parameters of a jobs file's ``[jobs.NAME.params]`` table, and each problem found (``where`` names it)."""
    params, problems = [], []
    for name, spec in table.items():
        place = f"{where}.params.{name}"
        if not isinstance(spec, Mapping):
            problems.append(f"{place}: expected a table such as {{ type = \"str\", default = \"north\" }}")
            continue
        unknown = set(spec) - {"type", "default", "choices", "description"}
        kind = spec.get("type")
        if unknown:
            problems.append(f"{place}: unknown key(s) {', '.join(sorted(unknown))}; "
                            "expected type, default, choices, description")
        if kind not in TYPES:
            problems.append(f"{place}.type: expected one of {', '.join(TYPES)}, not {kind!r}")
            continue
        if "default" not in spec:
            problems.append(f"{place}.default: missing (a scheduled run gets it)")
            continue
        choices = spec.get("choices")
        if choices is not None and not isinstance(choices, list):
            problems.append(f"{place}.choices: expected a list, not {choices!r}")
            continue
        try:
            coerced = tuple(_convert(kind, c) for c in choices) if choices is not None else None
            param = Param(name, kind, _convert(kind, spec["default"]), coerced, str(spec.get("description", "")))
            param.coerce(param.default)
        except ValueError as exc:
            problems.append(f"{place}: expected {exc}")
            continue
        params.append(param)
    return tuple(params), problems


def validate(job: str, declared: Iterable[Param], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``given`` checked against ``declared``, with every default filled in; ``ParamError`` lists every problem
    (an unknown name, a value of the wrong type or outside its choices)."""
    by_name = {p.name: p for p in declared}
    values = {name: p.default for name, p in by_name.items()}
    problems = []
    for name, value in (given or {}).items():
        param = by_name.get(name)
        if param is None:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(f"unknown parameter {name!r} (job {job} declares: {known})")
            continue
        try:
            values[name] = param.coerce(value)
        except ValueError as exc:
            problems.append(f"parameter {name!r} of job {job}: expected {exc}")
    if problems:
        raise ParamError("; ".join(problems))
    return values


def parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``--param key=value`` arguments as a mapping (values still text); ``ParamError`` for one without ``=``."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"--param {pair!r}: expected key=value")
        found[key.strip()] = value
    return found
