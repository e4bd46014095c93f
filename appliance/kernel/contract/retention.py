"""How long the ledger keeps a job's history: ``keep_runs`` (the newest runs always kept), ``keep_days`` (runs and
slot rows younger than this always kept) and ``keep_failed_days`` (the same for failed runs and slots, kept longer).

A run is deleted once it is neither among the job's newest ``keep_runs`` nor younger than its days; a slot row
older than its days is summarised (``job_slot_summaries``: per day and outcome) instead of lost, so
``appliance audit`` still proves old windows. The worker applies it (``appliance.worker.retention``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEYS = ("keep_runs", "keep_days", "keep_failed_days")


@dataclass(frozen=True)
class Retention:
    keep_runs: int = 1000
    keep_days: float = 30.0
    keep_failed_days: float = 90.0

    def to_json(self) -> dict[str, Any]:
        return {"keep_runs": self.keep_runs, "keep_days": self.keep_days, "keep_failed_days": self.keep_failed_days}


#: What a job keeps unless it says otherwise.
DEFAULT = Retention()


def declare(table: Mapping[str, Any], where: str) -> tuple[Retention, list[str]]:
    """The retention of a jobs file's ``[jobs.NAME]`` table (its ``keep_*`` keys), and each problem found."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key in KEYS:
        if key not in table:
            continue
        value = table[key]
        integer = key == "keep_runs"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or value <= 0 or (integer and not isinstance(value, int)):
            kind = "integer" if integer else "number of days"
            problems.append(f"{where}.{key}={value!r}: expected a positive {kind}")
            continue
        values[key] = value
    if "keep_failed_days" not in values:
        values["keep_failed_days"] = max(Retention.keep_failed_days, values.get("keep_days", Retention.keep_days))
    return Retention(**values), problems
