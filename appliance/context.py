"""Kept so that jobs written against the documented ``appliance.context`` keep working: a run's context lives
in ``appliance.kernel.context`` since the kernel became a package of its own."""

from appliance.kernel.context import CancelToken, RunContext

__all__ = ["CancelToken", "RunContext"]
