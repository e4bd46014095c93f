"""A pause's end, and what becomes of the slots it held back (its ``on_resume`` policy).

Every slot of a paused job is a ledger row ``paused`` saying who paused it, why and until when. When the pause
ends (``appliance jobs resume``, the admin API, or by itself at its ``until`` on whichever worker reaches it):

- ``skip`` (the default): none of them runs; the job goes on from its next slot;
- ``run_latest``: the newest of them runs once;
- ``catch_up:N``: the newest N of them run, oldest first.

Those that run are a backfill of exactly those slots (``appliance.kernel.protocol.backfill``): under the job's
lease and fence, each effect at most once, their rows moving from ``paused`` to what the run did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import psycopg

from appliance.config.env import EnvReader
from appliance.kernel.protocol import backfill
from appliance.kernel.protocol.state.pauses import Pause

POLICIES = ("skip", "run_latest", "catch_up:N")
_CATCH_UP = re.compile(r"^catch_up:(\d{1,4})$")
CATCH_UP_AT_MOST = 1000


def parse_on_resume(text: str) -> str:
    """``skip``, ``run_latest`` or ``catch_up:N`` (1 <= N <= 1000); ``ValueError`` saying what was expected."""
    value = (text or "skip").strip()
    match = _CATCH_UP.match(value)
    if value in ("skip", "run_latest") or (match and 1 <= int(match.group(1)) <= CATCH_UP_AT_MOST):
        return value
    raise ValueError(f"--on-resume must be skip, run_latest or catch_up:N (N from 1 to {CATCH_UP_AT_MOST}), "
                     f"not {text!r}")


def parse_until(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC when it names no zone) or a duration from ``now`` (``30m``, ``2h``, ``1d``), which
    must lie in the future; ``ValueError`` otherwise."""
    env = EnvReader({"UNTIL": text})
    seconds = env.duration("UNTIL", -1.0)
    if not env.problems and seconds > 0:
        return now + timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--until must be an ISO 8601 time or a duration such as 30m or 2h, not {text!r}") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when <= now:
        raise ValueError(f"--until {text!r} is not in the future")
    return when


def held_back(conn: psycopg.Connection, job: str, pause: Pause, until: datetime) -> list[datetime]:
    """The slots of ``job`` recorded ``paused`` from the pause's start up to ``until``, oldest first."""
    start = datetime.fromisoformat(pause.at.replace("Z", "+00:00"))
    return [row[0] for row in conn.execute(
        "SELECT slot FROM job_slots WHERE job = %s AND outcome = 'paused' AND slot >= %s AND slot <= %s "
        "ORDER BY slot", (job, start, until)).fetchall()]


def chosen(policy: str, slots: list[datetime]) -> list[datetime]:
    """The slots ``policy`` runs, of those held back (oldest first)."""
    if policy == "run_latest":
        return slots[-1:]
    match = _CATCH_UP.match(policy)
    if match:
        return slots[-int(match.group(1)):]
    return []


def apply(conn: psycopg.Connection, jobs: Iterable[str], pause: Pause, actor: str, now: datetime) -> dict[str, str]:
    """Queue, as backfills, the slots ``pause``'s policy runs for each of ``jobs``; returns job -> backfill id."""
    queued: dict[str, str] = {}
    if pause.on_resume == "skip":
        return queued
    for job in jobs:
        slots = chosen(pause.on_resume, held_back(conn, job, pause, now))
        if slots:
            queued[job] = backfill.create_for(conn, job, slots, actor, f"on resume ({pause.on_resume})",
                                              "on_resume")
    return queued
