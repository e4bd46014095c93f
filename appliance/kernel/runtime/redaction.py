"""The secret registry: every value the configuration declares secret, and every password in a URL setting.

``Redactor.from_config(config)`` is the one place that knows what must never be shown; the log filter, the
CLI's output, the sidecar's responses, alerts and the worker's stored run records all mask through it, so a
secret declared with ``env.secret(...)`` is covered everywhere the day it is added.

Besides the configured values, ``text()`` masks passwords in any URL (``scheme://user:PASSWORD@host``) and
secret query values (``?password=``), which covers URLs that jobs build themselves.
"""

from __future__ import annotations

import html
import json
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, unquote, urlsplit

from appliance.config.env import redact_url

MASK = "***"

#: Values shorter than this are masked only where they stand alone (not inside a longer word): masking a
#: two-letter password inside every word that contains it would make all output unreadable, while such a
#: value standing alone is exactly how it would leak.
MIN_ANYWHERE = 4

_URL_QUERY_SECRETS = ("password", "sentinel_password", "sslpassword")


def url_passwords(url: str) -> list[str]:
    """The password of ``url`` (raw and decoded) and the values of its secret query parameters."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
    except ValueError:
        return []
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if key.lower() in _URL_QUERY_SECRETS:
            found.append(value)
    return [v for raw in found if raw for v in (raw, unquote(raw))]


def _forms(value: str) -> set[str]:
    """``value`` as it may appear in output: plain, URL-encoded, JSON-escaped, HTML-escaped, and JSON-escaped
    forms of those (a URL-encoded password inside a JSON document)."""
    forms = {value, quote(value, safe=""), quote(value), quote_plus(value), html.escape(value)}
    forms |= {json.dumps(f)[1:-1] for f in list(forms)} | {json.dumps(value, ensure_ascii=False)[1:-1]}
    return {f for f in forms if f}


class Redactor:
    """Masks registered secret values (in every form they take in output) and URL passwords.

    ``names`` are the settings the values came from, for tests and diagnostics; the values themselves are
    never exposed. An empty value is never registered (masking "" would be meaningless).
    """

    def __init__(self, values: Mapping[str, Iterable[str]] | None = None):
        anywhere: set[str] = set()
        alone: set[str] = set()
        names = set()
        for name, group in (values or {}).items():
            for value in group:
                if not value:
                    continue
                names.add(name)
                for form in _forms(value):
                    (anywhere if len(form) >= MIN_ANYWHERE else alone).add(form)
        self.names = frozenset(names)
        patterns = [re.escape(v) for v in sorted(anywhere, key=len, reverse=True)]
        patterns += [rf"(?<![0-9A-Za-z]){re.escape(v)}(?![0-9A-Za-z])" for v in sorted(alone, key=len, reverse=True)]
        self._pattern = re.compile("|".join(patterns)) if patterns else None

    @classmethod
    def from_config(cls, config: Any) -> Redactor:
        """The registry of ``config``: each declared secret that is set, the passwords of every URL setting and
        of the effective service URLs (which may come from defaults), and the embedded PostgreSQL password when
        its file exists.

        ``config`` is an ``appliance.config.Config``, not imported: the configuration's job catalog imports the
        log module, which imports this one."""
        values: dict[str, list[str]] = {name: [value] for name, value in config.secret_values}
        for name, url in config.url_values:
            values.setdefault(name, []).extend(url_passwords(url))
        core = config.core
        for name, url in (("REDIS_URL", core.redis_url), ("DATABASE_URL", core.database_url),
                          ("QDRANT_URL", core.qdrant_url)):
            values.setdefault(name, []).extend(url_passwords(url))
        values.setdefault("embedded PostgreSQL password", []).extend(_password_file(config))
        return cls(values)

    def text(self, s: str) -> str:
        """``s`` with every registered secret and every URL password replaced by ``***``."""
        if not s:
            return s
        if self._pattern is not None:
            s = self._pattern.sub(MASK, s)
        return redact_url(s)

    def value(self, obj: Any) -> Any:
        """A redacted copy of ``obj``: strings (also dict keys) inside dicts, lists and tuples are masked;
        other values are returned as they are."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.value(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.value(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self.value(v) for v in obj)
        return obj


def _password_file(config: Any) -> list[str]:
    """The generated password of the embedded PostgreSQL, when the configuration names its file and the file
    exists (it is created at the first start; before that there is nothing to mask)."""
    path = config.core.database_password_file
    if path is None:
        return []
    try:
        return [path.read_text().strip()]
    except OSError:
        return []


class RedactingStream:
    """A text stream that masks through ``redactor`` before writing to ``target``.

    Text is held until a newline (or ``flush()``), so a secret written in two pieces (``json.dump`` writes in
    chunks, ``print`` writes the text and the newline separately) is still seen whole.
    """

    def __init__(self, target: TextIO, redactor: Redactor):
        self.target = target
        self.redactor = redactor
        self._pending = ""
        # Job threads print concurrently; the pending text must not be lost between them.
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            self._pending += s
            if "\n" in self._pending:
                done, _, self._pending = self._pending.rpartition("\n")
                self.target.write(self.redactor.text(done) + "\n")
        return len(s)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.target.write(self.redactor.text(self._pending))
                self._pending = ""
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def guard_output(redactor: Redactor) -> None:
    """Route this process's stdout and stderr through ``redactor`` (the CLI's printed results and messages);
    called again, it only changes the registry."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, RedactingStream):
            stream.redactor = redactor
        else:
            setattr(sys, name, RedactingStream(stream, redactor))
