"""Kept so that jobs written against the documented ``appliance.context`` keep working: ``appliance.sdk`` is the
jobs' module now."""

from appliance.sdk import CancelToken, RunContext

__all__ = ["CancelToken", "RunContext"]
