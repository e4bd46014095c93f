"""Kept so that job packs written against the documented ``appliance.jobspec`` keep working: ``appliance.sdk`` is
the packs' module now."""

from appliance.sdk import JobFunc, JobSpec

__all__ = ["JobFunc", "JobSpec"]
