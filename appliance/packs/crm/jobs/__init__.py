"""The CRM job pack on PostgreSQL (seed 004 "Scheduled Jobs"): one module per job, documented in
docs/jobs.md. Every job needs the database; the schedules are the defaults, each overridable with
``SCHEDULE_<NAME>``."""

from appliance.packs.crm.jobs import calls, campaigns, cleanup, reminders, trials
from appliance.sdk import JobSpec

JOBS: list[JobSpec] = [
    JobSpec("campaign-scheduler", campaigns.run, "* * * * *",
            "send due campaigns in batches (CAMPAIGN_BATCH_SIZE, CAMPAIGN_BATCH_DELAY)", needs=("db",)),
    JobSpec("lead-reminder-scheduler", reminders.run, lambda config: f"{config.crm.lead_reminder_interval}m",
            "one reminder email to the agent per due lead follow-up (LEAD_REMINDER_INTERVAL)", needs=("db",)),
    JobSpec("call-scheduler", calls.run, lambda config: f"{config.crm.call_scheduler_interval}s",
            "dial due queued calls within each tenant's business hours (CALL_SCHEDULER_INTERVAL)", needs=("db",)),
    JobSpec("trial-expiration", trials.run, "0 * * * *", "suspend active trial tenants whose trial has ended",
            needs=("db",)),
    JobSpec("call-cleanup", cleanup.run, "02:00",
            "delete old call records, finished calls, activity and settled outbox rows in small batches",
            needs=("db",)),
]
