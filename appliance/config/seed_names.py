"""The source documents' names for settings this project names otherwise (../shared/seeds: seeds 000-003).

An operator who copies a seed's ``.env`` gets what it means here: a seed's name with the same meaning is read
as the project's own, a seed's word for a value is accepted (``LOG_LEVEL=warn``), and a seed variable with no
meaning here is named in ``check-config`` instead of being ignored in silence. Two names of one setting set to
different values (a seed's and the project's, or two seeds') are a configuration error naming both: which one
was meant cannot be known. ``EnvReader.notes`` records what was read for ``check-config``. A job pack reads the
seeds' names of its own settings itself (the CRM pack: ``API_CIRCUIT_BREAKER_*``, ``API_REQUEST_TIMEOUT_MS``).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from appliance.config.env import EnvReader, duration_seconds, redact_url

#: Seed 001's Redis: ``REDIS_HOST`` and ``REDIS_PORT`` (defaults ``localhost``, ``6379``) make ``REDIS_URL``.
REDIS_HOST, REDIS_PORT, REDIS_DEFAULT_PORT = "REDIS_HOST", "REDIS_PORT", 6379
#: How a service link spells an address (``REDIS_PORT=tcp://10.0.0.11:6379``).
SERVICE_LINK = "tcp://"
_HOST_FORBIDDEN = set("/?#@[]: \t")


def same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a.strip() == b.strip()


def same_bool(a: str, b: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    return words.get(a.strip().lower(), a) == words.get(b.strip().lower(), b)


def same_duration(unit: str) -> Callable[[str, str], bool]:
    """Equal as durations whose bare numbers are in ``unit`` (``30000ms`` and ``30`` in seconds)."""

    def same(a: str, b: str) -> bool:
        try:
            return duration_seconds(a, unit) == duration_seconds(b, unit)
        except ValueError:
            return a.strip() == b.strip()

    return same


def in_unit(unit: str) -> Callable[[str], str]:
    """A seed's bare number is in ``unit`` (``ms``): written with it, so the project's setting reads it so."""
    return lambda value: value.strip() + unit if value.strip().isdigit() else value.strip()


#: The project's name -> the seeds' names for the same setting (the preferred first), and how two values compare.
ALIASES: dict[str, tuple[tuple[str, ...], Callable[[str, str], bool]]] = {
    "JOB_MAX_RETRIES": (("QUEUE_MAX_RETRIES", "MAX_RETRIES"), same_number),  # seeds 003, 001
    # The first retry's delay in ms, each next one 5x longer (seed 001: 5 s, 25 s, 125 s).
    "JOB_RETRY_BACKOFF_MS": (("QUEUE_RETRY_BACKOFF_MS", "RETRY_DELAY"), same_duration("ms")),  # seeds 003, 001
    "WORKER_ENABLED": (("ENABLE_SCHEDULER",), same_bool),  # seed 002: the scheduler runs only when enabled
}
#: Seed 003's log levels that the project spells otherwise.
LOG_LEVELS = {"warn": "warning", "verbose": "debug"}
#: Seed 003's per-job schedule override, ``CRON_<JOB>``; the project's is ``SCHEDULE_<JOB>``.
CRON_PREFIX, SCHEDULE_PREFIX = "CRON_", "SCHEDULE_"
_NO_CAP = ("each enabled job has a thread of its own and runs one slot at a time (WORKER_THREADS only adds "
           "threads), so there is no cap on jobs running at once; JOBS_ENABLED and ENABLED_<JOB> choose which "
           "jobs run in this worker")
MEANINGLESS = {
    "WORKER_POLL_INTERVAL_MS": "the worker does not poll; it sleeps until each job's next slot and wakes at once "
                               "for triggers (set each job's schedule: SCHEDULE_<JOB>)",
    "NODE_ENV": "LOG_FORMAT picks JSON or text logs, and the scheduler runs wherever the worker is enabled "
                "(WORKER_ENABLED, IS_WORKER)",
    # Seed 000: "process N sales per cycle" of its one polling loop.
    "WORKER_BATCH_SIZE": "the worker has no items of its own to batch; each job sizes its batches "
                         "(CAMPAIGN_BATCH_SIZE, KNOWLEDGE_BATCH_SIZE, CLEANUP_BATCH_SIZE)",
    "CONCURRENCY": _NO_CAP,  # seed 001: jobs its queue processor runs at once
    "QUEUE_CONCURRENCY": _NO_CAP,  # seed 003: "maximum 5 concurrent jobs"
}


def read_seed_names(env: EnvReader) -> None:
    """Record in ``env`` (before any section reads it) what the seeds' names stand for."""
    for own, (seeds, same) in ALIASES.items():
        env.alias(own, *seeds, same=same)
    read_redis_host_port(env)
    for variable in sorted(env.environ):
        if variable.startswith(CRON_PREFIX) and not variable.endswith("_FILE"):
            env.alias(SCHEDULE_PREFIX + variable.removeprefix(CRON_PREFIX), variable)
    env.alias_value("LOG_LEVEL", LOG_LEVELS)
    for name, why in MEANINGLESS.items():
        env.meaningless(name, why)


def read_redis_host_port(env: EnvReader) -> None:
    """Seed 001's ``REDIS_HOST`` and ``REDIS_PORT`` as ``REDIS_URL=redis://HOST:PORT`` (either may be left out:
    ``localhost``, ``6379``). A ``REDIS_URL`` that is set must name the same host and port."""
    host, port = ((env.environ.get(name) or "").strip() for name in (REDIS_HOST, REDIS_PORT))
    if port.startswith(SERVICE_LINK):
        # Not seed 001's: Kubernetes (and Docker's links) set REDIS_PORT=tcp://IP:6379 for a service named redis.
        env.notes.append(f"{REDIS_PORT}={port} ignored: a Kubernetes or Docker service link, not a port number")
        port = ""
    if not host and not port:
        return
    given = " and ".join(name for name, value in ((REDIS_HOST, host), (REDIS_PORT, port)) if value)
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        env.problem(REDIS_PORT, port, "a port number from 1 to 65535 (seed 001's name, read into REDIS_URL)")
        return
    if host and (_HOST_FORBIDDEN & set(host) and not _ipv6(host)):
        env.problem(REDIS_HOST, host, "a host name or IP address (seed 001's name, read into REDIS_URL)")
        return
    shown = ", ".join(f"{name}={value}" for name, value in ((REDIS_HOST, host), (REDIS_PORT, port)) if value)
    host, number = host or "localhost", int(port or REDIS_DEFAULT_PORT)
    url = f"redis://{f'[{host}]' if _ipv6(host) else host}:{number}"
    own = env.peek("REDIS_URL")
    if own is None:
        env.environ["REDIS_URL"] = url
        env.origin["REDIS_URL"] = given
        env.notes.append(f"REDIS_URL taken from {given} (seed 001's names for it): {url}")
        return
    try:
        parts = urlsplit(own)
        same = (parts.hostname or "").lower() == host.strip("[]").lower() and (parts.port or 6379) == number
    except ValueError:
        same = False  # REDIS_URL's own reading reports it
    if same:
        env.notes.append(f"{given} ignored: REDIS_URL names the same server")
    else:
        env.problems.append(f"{shown} and REDIS_URL={redact_url(own)} name different Redis servers: keep one of them")


def _ipv6(host: str) -> bool:
    return ":" in host.strip("[]") and set(host.strip("[]")) <= set("0123456789abcdefABCDEF:.")
