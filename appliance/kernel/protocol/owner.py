"""Identity of a worker process and the owner tokens it writes into locks.

A token reads ``web-7f9c pid=1234 started=2026-11-22T10:00:00.123Z run=5f0c2a9e``, so
``redis-cli GET lock:call-scheduler`` tells an operator which host and process hold the job, and since when.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

_TOKEN = re.compile(r"^(?P<host>\S+) pid=(?P<pid>\d+) started=(?P<started>\S+) run=(?P<run>\S+)$")


def iso(dt: datetime) -> str:
    """``2026-11-22T10:00:00.123Z``: UTC with milliseconds, as seed 004's JSON shows times."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def worker_id(host: str | None = None, pid: int | None = None) -> str:
    return f"{host or socket.gethostname()}:{pid or os.getpid()}"


#: Random bits of an id. Ids key ``job_runs`` for as long as retention keeps a run: 48 bits (the first width)
#: repeat among about 2^24 = 17 million ids, which 10 jobs a second reach in 20 days; 96 bits would need about
#: 2^48 before one pair is likely.
ID_BITS = 96


def new_run_id() -> str:
    """A run's (or a trigger's, a backfill's, a dead letter's) id: ``ID_BITS`` random bits in hex."""
    return secrets.token_hex(ID_BITS // 8)


def make_token(run_id: str, started: datetime, host: str | None = None, pid: int | None = None) -> str:
    return f"{host or socket.gethostname()} pid={pid or os.getpid()} started={iso(started)} run={run_id}"


@dataclass(frozen=True)
class TokenInfo:
    host: str
    pid: int
    started: str
    run_id: str

    @property
    def worker_id(self) -> str:
        return f"{self.host}:{self.pid}"


def parse_token(token: str) -> TokenInfo | None:
    """The parts of an owner token, or None for a value some other program wrote."""
    match = _TOKEN.match(token or "")
    if not match:
        return None
    return TokenInfo(match["host"], int(match["pid"]), match["started"], match["run"])
