"""OpenTelemetry tracing: one span per slot, its job's PostgreSQL, Redis and HTTP calls under it, the sidecar's
requests as server spans, exported over OTLP/HTTP.

Off unless ``config.tracing.enabled`` (an ``OTEL_*`` exporter set: ``appliance.config.tracing``). Off, the
trace SDK, the exporter and the instrumentations are never imported (redis-py imports OpenTelemetry's metrics SDK
by itself where it is installed) and every function here returns at its first line: a slot pays a
call, a test, and entering and leaving one shared object. On, ``start`` builds the SDK once per process (a
process forked after it, as gunicorn's workers are, builds its own: an exporter belongs to one process), and
instruments psycopg, redis and httpx: Redis commands and HTTP requests wherever they are made, PostgreSQL
statements on the connections opened afterwards, so that entry points call it before they build their pools.

The SDK reads ``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``
and the batch processor's variables itself. One rule is added to the sampler: a client call that starts a trace
(a PostgreSQL or Redis call the worker makes for itself, its heartbeat or its loop, outside any slot) is not
recorded; a slot's job's calls are, as its children.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any

from appliance.config import Config
from appliance.kernel.protocol.outcomes import Outcome
from appliance.kernel.protocol.owner import iso

log = logging.getLogger("appliance.tracing")

#: The span of every slot, run or not: ``slot <job>``; its attributes are named ``appliance.*``.
SPAN_PREFIX = "slot "
#: Outcomes whose span has status error.
ERRORS = frozenset({Outcome.FAILURE, Outcome.FAILED, Outcome.DEAD_LETTERED, Outcome.TIMED_OUT, Outcome.LEASE_LOST,
                    Outcome.ABANDONED, Outcome.SKIPPED_UNAVAILABLE})
#: Requests the sidecar does not trace: probes and scrapes, polled every few seconds by machines.
UNTRACED_URLS = r"://[^/]+/health,://[^/]+/metrics"
#: Slots missed in one go (after downtime) that get spans, the newest; every one has its ledger row.
MISSED_SPANS = 100
#: How long a stopping process waits for its last spans to be exported.
FLUSH_TIMEOUT = 1.0


class _Tracing:
    """The SDK's objects of this process (only made when tracing is on)."""

    def __init__(self, provider: Any, tracer: Any, pid: int):
        from opentelemetry import context, trace
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        self.provider = provider
        self.tracer = tracer
        self.trace = trace
        self.context = context
        self.suppress = suppress_instrumentation
        self.pid = pid


_on: _Tracing | None = None
_lock = threading.Lock()
_local = threading.local()


def enabled() -> bool:
    return _on is not None and _on.pid == os.getpid()


def start(config: Config, program: str) -> bool:
    """Set tracing up for this process (``program``: ``worker``, ``sidecar``, ...), once; True when it is on."""
    global _on
    if not config.tracing.enabled:
        return False
    with _lock:
        if _on is not None and _on.pid == os.getpid():
            return True
        _on = _build(config, program)
    log.info("tracing on: spans exported over OTLP/HTTP", extra={"fields": {"service": _service_name(config, program)}})
    return True


def _service_name(config: Config, program: str) -> str:
    return config.tracing.service_name or f"appliance-{program}"


def _build(config: Config, program: str) -> _Tracing:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.util.re import parse_env_headers

    from appliance import __version__

    resource = Resource.create({"appliance.program": program, "service.version": __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: _service_name(config, program)}))
    # No exit handler: its shutdown waits on an export in flight for as long as the exporter's timeout, which a
    # collector that hangs would add to a worker's stop (``flush`` waits within its own bound instead).
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.sampler = _own_roots(provider.sampler)
    headers = parse_env_headers(config.tracing.headers, liberal=True) if config.tracing.headers else None
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(headers=headers)))
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    for instrumentor in (PsycopgInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    return _Tracing(provider, provider.get_tracer("appliance"), os.getpid())


def _own_roots(configured: Any) -> Any:
    """``configured`` (``OTEL_TRACES_SAMPLER``), except that a client span without a parent is dropped."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind, get_current_span

    class OwnRoots(Sampler):
        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                          trace_state=None):
            if kind is SpanKind.CLIENT and not get_current_span(parent_context).get_span_context().is_valid:
                return SamplingResult(Decision.DROP)
            return configured.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"OwnRoots{{{configured.get_description()}}}"

    return OwnRoots()


def flush(timeout: float = FLUSH_TIMEOUT) -> bool:
    """Export the spans ended so far, waiting at most ``timeout`` seconds (a stopping process calls it; the
    exporter's thread is a daemon, which does not hold the exit); True when all went."""
    if not enabled():
        return True
    assert _on is not None
    return bool(_on.provider.force_flush(timeout_millis=max(1, int(timeout * 1000))))


def instrument_flask(app: Any) -> None:
    """The sidecar's requests as server spans (a ``traceparent`` they carry is their parent)."""
    if not enabled():
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    assert _on is not None
    FlaskInstrumentor.instrument_app(app, tracer_provider=_on.provider, excluded_urls=UNTRACED_URLS)


# -- slots ------------------------------------------------------------------------------------------------
class SlotSpan:
    """The span of one slot (or one attempt at it); its methods do nothing when tracing is off. ``context``: the
    span's, in which the job's own calls are traced (``job_calls``)."""

    __slots__ = ("context", "job", "slot", "span")

    def __init__(self, job: str, slot: datetime | None, span: Any = None, context: Any = None):
        self.job = job
        self.slot = slot
        self.span = span
        self.context = context

    def set(self, **attributes: Any) -> None:
        """``appliance.<name>`` attributes (a time as ISO 8601 UTC); None values are left out."""
        if self.span is not None:
            self.span.set_attributes({f"appliance.{k}": iso(v) if isinstance(v, datetime) else v
                                      for k, v in attributes.items() if v is not None})

    def outcome(self, outcome: Outcome | str, error: str | None = None) -> None:
        """What became of the slot; a failure sets the span's status to error (``error``: its description)."""
        if self.span is None:
            return
        assert _on is not None
        self.span.set_attribute("appliance.outcome", str(outcome))
        if outcome in ERRORS:
            self.span.set_status(_on.trace.Status(_on.trace.StatusCode.ERROR, error or str(outcome)))


class _Untraced:
    """``slot_span`` when tracing is off: one object for every slot, entered and left for nothing."""

    span = SlotSpan("", None)

    def __enter__(self) -> SlotSpan:
        return self.span

    def __exit__(self, *exc: object) -> None:
        return None


_UNTRACED = _Untraced()
_NO_CALLS = nullcontext()


def slot_span(job: str, slot: datetime, trigger: str, attempt: int | None = None) -> AbstractContextManager[SlotSpan]:
    """The current span while a slot is claimed and run in this thread; the log lines written meanwhile carry
    its ids. The worker's own calls for the slot (lease, fence, ledger rows) are not traced, which keeps a span's
    cost to the slot's and its job's calls; the job's are, as its children, inside ``job_calls``. Off, this is
    the whole cost of tracing for a slot: a call, a test, and entering and leaving a shared object."""
    if _on is None or _on.pid != os.getpid():
        return _UNTRACED
    return _traced_slot(job, slot, trigger, attempt)


@contextmanager
def _traced_slot(job: str, slot: datetime, trigger: str, attempt: int | None) -> Iterator[SlotSpan]:
    assert _on is not None
    attributes: dict[str, Any] = {"appliance.job": job, "appliance.slot": iso(slot), "appliance.trigger": trigger}
    if attempt is not None:
        attributes["appliance.attempt"] = attempt
    with _on.tracer.start_as_current_span(SPAN_PREFIX + job, attributes=attributes) as span:
        handle = SlotSpan(job, slot, span, _on.context.get_current())
        outer, _local.slot = getattr(_local, "slot", None), handle
        try:
            with _on.suppress():
                yield handle
        finally:
            _local.slot = outer


def job_calls() -> AbstractContextManager[object]:
    """The job body of the slot whose span is current in this thread: its PostgreSQL, Redis and HTTP calls are
    traced as the span's children (the ``traceparent`` header sent with its HTTP requests)."""
    current = getattr(_local, "slot", None)
    if current is None or current.context is None or not enabled():
        return _NO_CALLS
    return _in_context(current.context)


@contextmanager
def _in_context(context: Any) -> Iterator[None]:
    assert _on is not None
    token = _on.context.attach(context)
    try:
        yield
    finally:
        _on.context.detach(token)


def slot_not_run(job: str, slot: datetime, outcome: Outcome, reason: str | None) -> None:
    """A slot that ends without a run: its outcome on the slot's span when that is current in this thread (the
    claim found it done, locked...), otherwise a span of its own (paused, missed, coalesced, a calendar's)."""
    if not enabled():
        return
    current = getattr(_local, "slot", None)
    if current is not None and current.job == job and current.slot == slot:
        current.set(reason=reason)
        current.outcome(outcome, reason)
        return
    with slot_span(job, slot, "schedule") as span:
        span.set(reason=reason)
        span.outcome(outcome, reason)


# -- a job's body in a child process (isolation = process) ------------------------------------------------
#: What a forkserver imports ahead when tracing is on, so that a child does not pay for the SDK's import each run.
PRELOAD = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
           "opentelemetry.instrumentation.psycopg", "opentelemetry.instrumentation.redis",
           "opentelemetry.instrumentation.httpx")


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the slot span current in this thread, for a child process to continue it."""
    current = getattr(_local, "slot", None)
    if current is None or current.context is None or not enabled():
        return None
    assert _on is not None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=current.context)
    return carrier.get("traceparent")


def continued(parent: str | None) -> AbstractContextManager[object]:
    """In a run's child process: its job's calls traced as children of the slot span ``parent`` names."""
    if parent is None or not enabled():
        return _NO_CALLS
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return _in_context(TraceContextTextMapPropagator().extract({"traceparent": parent}))


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the span current in this thread, for log lines; None when there is none."""
    if _on is None:
        return None
    context = _on.trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
