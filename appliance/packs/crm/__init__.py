"""The CRM pack (seed 004 "Scheduled Jobs"): campaigns, lead reminders, the call queue, trial expiry and
cleanup on PostgreSQL, and the channels their messages leave by (docs/jobs.md).

Its settings (``config.crm``), jobs, ``appliance seed-demo``, its tables and seed 004's names of its jobs in
``/health`` and ``/metrics``, registered in ``PACK``.
"""

from appliance.packs.crm.settings import load_crm
from appliance.sdk import Pack, SeedNames

PACK = Pack(
    name="crm",
    settings=load_crm,
    jobs="appliance.packs.crm.jobs:JOBS",
    commands="appliance.packs.crm.demo:register",
    seed_names={
        "campaign-scheduler": SeedNames(health="campaign", processed="campaigns", last_run="campaign"),
        "lead-reminder-scheduler": SeedNames(health="leadReminder", processed="reminders", last_run="reminder"),
        "call-scheduler": SeedNames(health="callScheduler", processed="calls", last_run="call"),
    },
    migrations="appliance.packs.crm",
)
