"""How the cluster state's values are kept in Redis: JSON text, times as ISO 8601 UTC strings, numbers as text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from appliance.kernel.protocol.owner import iso


def loads(value: str | None) -> Any:
    """The JSON value of a Redis string, or None when the key or field is absent (or empty)."""
    return json.loads(value) if value else None


def int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def iso_from_epoch(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, UTC))
