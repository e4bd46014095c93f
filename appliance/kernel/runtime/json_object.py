"""``JsonObject``: a JSON object whose keys the appliance does not fix.

Records the appliance reads and writes (runs, heartbeats, leases, dead letters...) are frozen dataclasses with
a ``to_json()``; this alias is for what stays free-form: what a job returned (its run's ``summary``), a
trigger's ``payload``, a pack's own ``/health`` section and backup manifest entry, and the JSON a record's
``to_json()`` hands to ``json.dumps`` or Flask.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonObject: TypeAlias = dict[str, Any]
