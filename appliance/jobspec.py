"""Kept so that job packs written against the documented ``appliance.jobspec`` keep working: the job contract
lives in ``appliance.kernel.jobspec`` since the kernel became a package of its own."""

from appliance.kernel.jobspec import JobFunc, JobSpec

__all__ = ["JobFunc", "JobSpec"]
