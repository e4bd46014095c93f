"""The built-in jobs: the CRM job pack and the knowledge indexer."""

from __future__ import annotations

from appliance.jobspec import JobSpec


def builtin_specs() -> list[JobSpec]:
    from appliance.jobs import JOBS as CRM_JOBS
    from appliance.knowledge import JOBS as KNOWLEDGE_JOBS

    return [*CRM_JOBS, *KNOWLEDGE_JOBS]
