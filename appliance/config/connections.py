"""Redis and PostgreSQL as operators run them: TLS with certificate verification, and Redis Sentinel.

The URL is the one description of a connection. TLS files given as settings are added to the URL's query
(``REDIS_TLS_CA_FILE`` becomes ``ssl_ca_certs``, ``DATABASE_TLS_CA_FILE`` becomes ``sslrootcert``), so every
client built from the URL, in any process, verifies the same way. A parameter already in the URL wins.

Sentinel: ``redis+sentinel://[user:password@]host:port[,host:port...]/MASTER[/DB][?sentinel_password=...]``
(``rediss+sentinel://`` for TLS to the sentinels and the master).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from appliance.config.env import EnvReader, redact_url

REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
#: Settings that add a TLS file to the Redis URL, and the redis-py URL parameter each becomes.
REDIS_TLS_FILES = {"REDIS_TLS_CA_FILE": "ssl_ca_certs", "REDIS_TLS_CERT_FILE": "ssl_certfile",
                   "REDIS_TLS_KEY_FILE": "ssl_keyfile"}
#: The same for PostgreSQL and libpq's URL parameters.
DATABASE_TLS_FILES = {"DATABASE_TLS_CA_FILE": "sslrootcert", "DATABASE_TLS_CERT_FILE": "sslcert",
                      "DATABASE_TLS_KEY_FILE": "sslkey"}
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None
    tls: bool
    #: Query parameters: ``sentinel_username``, ``sentinel_password`` and redis-py's ``ssl_*`` options.
    options: tuple[tuple[str, str], ...]


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0] in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Raises ``ValueError`` saying what is wrong (never quoting the password)."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, has_password, password = userinfo.partition(":")
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item)
    if not sentinels:
        raise ValueError("at least one sentinel host:port")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("the master's name as the path (/MASTER or /MASTER/DB)")
    db = path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise ValueError("a database number after the master's name (/MASTER/DB)")
    return SentinelTarget(
        sentinels=sentinels, master=path[0], db=int(db), username=unquote(username) or None,
        password=unquote(password) if has_password else None, tls=parts.scheme.startswith("rediss"),
        options=tuple(parse_qsl(parts.query)),
    )


def _host_port(item: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or host.endswith(":"):
        host, port = item, str(SENTINEL_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"sentinels as host:port separated by commas (not {item!r})")
    return host, int(port)


def load_redis_url(env: EnvReader, default: str) -> str:
    """``REDIS_URL`` (plain, TLS, unix socket or Sentinel) with the ``REDIS_TLS_*`` files added."""
    raw = env.raw("REDIS_URL")
    if raw is not None and is_sentinel(raw):
        env.url_names.add("REDIS_URL")
        env.url_values["REDIS_URL"] = raw
        try:
            parse_sentinel_url(raw)
            url = raw
        except ValueError as exc:
            env.invalid("REDIS_URL", redact_url(raw), f"expected {exc} in a redis+sentinel:// URL")
            url = default
    else:
        url = env.url("REDIS_URL", default, REDIS_SCHEMES + SENTINEL_SCHEMES)
    tls = url.startswith(("rediss://", "rediss+sentinel://"))
    return _with_files(env, "REDIS_URL", url, REDIS_TLS_FILES, tls, "a rediss:// or rediss+sentinel:// REDIS_URL")


def load_database_url(env: EnvReader, url: str, embedded: bool) -> str:
    """``url`` with the ``DATABASE_TLS_*`` files added; a CA file alone means ``sslmode=verify-full``. The
    embedded PostgreSQL is reached over its unix socket, where TLS does not apply."""
    query = dict(parse_qsl(urlsplit(url).query))
    if env.raw("DATABASE_TLS_CA_FILE") and "sslmode" not in query and not embedded:
        url = _add_query(url, {"sslmode": "verify-full"})
        query["sslmode"] = "verify-full"
    url = _with_files(env, "DATABASE_URL", url, DATABASE_TLS_FILES, not embedded, "DATABASE_URL to be set")
    sslmode = query.get("sslmode", "prefer")
    if sslmode not in SSLMODES:
        env.invalid("DATABASE_URL", redact_url(url), "sslmode must be one of " + ", ".join(SSLMODES))
    elif sslmode.startswith("verify-") and "sslrootcert" not in dict(parse_qsl(urlsplit(url).query)):
        env.invalid("DATABASE_URL", redact_url(url), f"sslmode={sslmode} needs the CA that signed the server's "
                    "certificate: set DATABASE_TLS_CA_FILE (or sslrootcert in the URL)")
    return url


def _with_files(env: EnvReader, url_name: str, url: str, files: dict[str, str], allowed: bool, needs: str) -> str:
    """``url`` with each file setting added as its parameter; every file named must be readable."""
    query = dict(parse_qsl(urlsplit(url).query))
    added = {}
    for name, param in files.items():
        value = env.raw(name)
        if value is None:
            continue
        if not allowed:
            env.invalid(name, value, f"TLS files need {needs}")
        elif not _readable(value):
            env.problem(name, value, "a readable file")
        elif param not in query:
            added[param] = value
    for param in files.values():
        value = query.get(param)
        if value is not None and value != "system" and not _readable(value):
            env.invalid(url_name, redact_url(url), f"its {param} must name a readable file")
    return _add_query(url, added)


def _readable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.R_OK)


def _add_query(url: str, params: dict[str, str]) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))
