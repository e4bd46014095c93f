"""Logging: JSON lines in production, readable text in development; secrets never written.

``LOG_FORMAT=auto`` picks text when the log's stream is a terminal and JSON otherwise (Supervisor, containers).
Structured fields go in ``extra={"fields": {...}}`` and appear as JSON keys or ``key=value`` pairs. With tracing
on, a JSON line written while a span is current (a slot's run, a sidecar request) carries its ``trace_id`` and
``span_id``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from appliance.kernel.protocol.owner import iso
from appliance.kernel.runtime import tracing
from appliance.kernel.runtime.json_object import JsonObject
from appliance.kernel.runtime.log_queue import BackgroundHandler
from appliance.kernel.runtime.redaction import Redactor

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "fields"}


class RedactFilter(logging.Filter):
    """Masks, through the secret registry, the message, the exception text and the fields of every record."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        clean = self.redactor.text
        record.msg = clean(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = self.redactor.value({k: _plain(v) for k, v in fields.items()})
        return True


def _plain(value: Any) -> Any:
    """``value`` as the formatters will show it, so an object whose ``str()`` carries a secret is masked too."""
    return value if isinstance(value, (str, int, float, bool, type(None), dict, list, tuple)) else str(value)


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str):
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        doc: JsonObject = {
            "ts": iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "process": self.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", None) or {})
        # The slot's or request's span, when tracing is on and one is current where the record was made.
        ids = record.trace_ids if hasattr(record, "trace_ids") else tracing.current_ids()
        if ids is not None:
            doc["trace_id"], doc["span_id"] = ids
        if record.exc_text:
            doc["error"] = record.exc_text
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, process: str):
        super().__init__("%(asctime)s %(levelname)-7s " + process + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def setup_logging(log_format: str, level: str, process: str, redactor: Redactor | None = None,
                  stream: TextIO | None = None, background: bool = False) -> None:
    """Configure the root logger once for this process; ``redactor`` (the secret registry,
    ``Redactor.from_config(config)``) masks every record. Without one, URL passwords are still masked.

    ``stream`` receives the lines: stderr by default, since commands print their results on stdout. The
    programs Supervisor runs pass stdout, so that their log is seed 004's ``worker.log`` / ``sidecar.log``
    and ``*-error.log`` keeps only what escapes logging (a crash's traceback): each line is written once,
    and once in ``docker logs``, which mirrors both files. ``background``: lines are masked, formatted and
    written by a thread of their own (``appliance.kernel.runtime.log_queue``), so that many threads logging at
    once never wait for one another (the worker)."""
    stream = sys.stderr if stream is None else stream
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(process) if log_format == "json" else TextFormatter(process))
    handler.addFilter(RedactFilter(redactor or Redactor()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, BackgroundHandler):
            old.close()  # its thread writes what it holds, then ends
    root.addHandler(BackgroundHandler(handler) if background else handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def fields(**values: Any) -> Mapping[str, object]:
    """``extra=`` argument carrying structured fields: ``log.info("run ended", extra=fields(job=...))``; the values
    are free-form (the JSON formatter shows what is not JSON as its ``str()``)."""
    return {"fields": values}
