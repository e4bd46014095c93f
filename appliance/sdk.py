"""The appliance's public interface for jobs and job packs: everything a job or a pack may use, in one module.

A job is a function of a ``RunContext``; a pack is a ``Pack`` named in the ``appliance.packs`` entry-point group
of its distribution. Both import this module (and ``appliance.config`` for the settings reader) and nothing else
of the appliance: every other module is the appliance's own and may change between releases. The built-in packs
are held to that (``tests/test_layers.py``), and ``tests/sample_pack.py`` is a pack written against this
module alone. ``appliance.context``, ``appliance.fencing``, ``appliance.errors`` and ``appliance.jobspec``, the
paths the documentation showed before, stay as they were.

What is here, by concern:

- declaring: ``JobSpec``, ``JobFunc``, ``Param`` (a parameter a trigger may give the job: ``ctx.params``),
  ``Pack``, ``SeedNames``, ``BackupPart`` (data a pack keeps outside
  PostgreSQL, for ``appliance backup``), ``load_settings`` (the configuration with every pack's section);
- running: ``RunContext`` (``ctx.checkpoint()``, ``ctx.sleep()``, ``ctx.fence``, ``ctx.clock``, ``ctx.params``,
  ``ctx.slot``: a historical slot for ``ctx.trigger == "backfill"``), ``CancelToken``;
- effectively once: ``complete_slot``, ``check_fence``, ``issue_fence``;
- failing: ``ApplianceError`` and its children (``Cancelled`` is a ``BaseException``: ``except Exception``
  does not swallow a shutdown);
- calling out: ``CircuitBreaker``, ``CircuitOpen``, ``BreakerState``;
- time: ``Clock``, ``SYSTEM``, ``iso``; calendars (the mechanism of a job's ``calendar`` key, for a pack's own
  closing times): ``Calendar``, ``make_calendar`` (dates, a country's public holidays, blackout windows),
  ``first_exclusion``, ``CalendarError``;
- data: ``connect_db``, ``make_redis``, ``one``, ``migrate``; files: ``write_atomic``, ``write_sparse``; the
  disk: ``measure_disk``, ``is_full_error``, ``size_text``, ``FULL_BELOW``;
- commands a pack adds to the CLI: ``config_or_exit``, ``jobs_or_exit``, ``Jobs``, ``setup_logs``,
  ``use_metrics_dir``, ``print_json``, ``fail``, ``ExitCode``, ``log_fields``; a pack's own metrics:
  ``lazy_metric`` (made on first use, after the entry point chose prometheus_client's directory);
- services of the running appliance: ``run_once`` (run a job now, in this process, under its lease and fence;
  ``RunOutcome``) and ``trigger_job`` (ask the cluster to run it).
"""

from appliance.errors import (
    ApplianceError,
    Cancelled,
    ConfigError,
    Conflict,
    LockLost,
    NotFound,
    ScheduleError,
    Shutdown,
    UntrustedService,
)
from appliance.kernel.contract.backup import BackupPart, BackupRefused, write_sparse
from appliance.kernel.contract.catalog import Jobs
from appliance.kernel.contract.context import CancelToken, RunContext
from appliance.kernel.contract.jobspec import JobFunc, JobSpec
from appliance.kernel.contract.packs import Pack, SeedNames, load_settings
from appliance.kernel.contract.params import Param
from appliance.kernel.contract.services import RunOutcome, run_once, trigger_job
from appliance.kernel.protocol.db.migrate import migrate
from appliance.kernel.protocol.db.rows import one
from appliance.kernel.protocol.fencing import check_fence, complete_slot, issue_fence
from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime.breaker import BreakerState, CircuitBreaker, CircuitOpen
from appliance.kernel.runtime.clients import connect_db, make_redis
from appliance.kernel.runtime.clock import SYSTEM, Clock
from appliance.kernel.runtime.disk import FULL_BELOW, is_full_error, size_text
from appliance.kernel.runtime.disk import measure as measure_disk
from appliance.kernel.runtime.exits import ExitCode
from appliance.kernel.runtime.files import write_atomic
from appliance.kernel.runtime.logs import fields as log_fields
from appliance.kernel.runtime.metrics import lazy as lazy_metric
from appliance.kernel.runtime.output import fail, print_json
from appliance.kernel.runtime.startup import config_or_exit, jobs_or_exit, setup_logs, use_metrics_dir
from appliance.kernel.schedule.calendars import Calendar, CalendarError, first_exclusion, make_calendar

__all__ = [
    "FULL_BELOW", "SYSTEM", "ApplianceError", "BackupPart", "BackupRefused", "BreakerState", "Calendar",
    "CalendarError", "CancelToken", "Cancelled", "CircuitBreaker", "CircuitOpen", "Clock", "ConfigError", "Conflict",
    "ExitCode", "JobFunc", "JobSpec", "Jobs", "LockLost", "NotFound", "Pack", "Param", "RunContext", "RunOutcome",
    "ScheduleError", "SeedNames", "Shutdown", "UntrustedService", "check_fence", "complete_slot", "config_or_exit",
    "connect_db", "fail", "first_exclusion", "is_full_error", "iso", "issue_fence", "jobs_or_exit", "lazy_metric",
    "load_settings", "log_fields", "make_calendar", "make_redis", "measure_disk", "migrate", "one", "print_json",
    "run_once", "setup_logs", "size_text", "trigger_job", "use_metrics_dir", "write_atomic", "write_sparse",
]
