"""The CRM job pack on PostgreSQL (seed 004 "Scheduled Jobs")."""

from appliance.jobspec import JobSpec

JOBS: list[JobSpec] = []
