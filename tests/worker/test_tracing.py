"""OpenTelemetry tracing of a real worker process, checked over the real wire protocol: the worker's OTLP/HTTP
exporter sends to a receiver in the test that decodes the protobuf export (``tests.otlp``), as a collector would.
A provider stand-in (a small HTTP server) receives the job's request and its ``traceparent`` header. Real
redis-server and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
import redis

from tests.local_http import JsonHandler, LocalServer
from tests.otlp import ReceivedSpan, Receiver
from tests.services import wait_until
from tests.worker.harness import WorkerProcess, records, worker_env, write_jobs_file

pytestmark = pytest.mark.process

JOBS = {
    "traced": {"callable": "tests.worker.sample_jobs:traced", "schedule": "1s"},
    "flaky": {"callable": "tests.worker.sample_jobs:flaky", "schedule": "1s", "max_retries": 0},
    "held": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s"},
    "isolated": {"callable": "tests.worker.sample_jobs:traced", "schedule": "2s", "isolation": "process"},
    "late": {"callable": "tests.worker.sample_jobs:tick", "schedule": "1s", "grace": 1},
}
#: How long before the worker's start ``late`` last ran: the slots between are missed.
DOWNTIME = 20


class Provider:
    """A provider stand-in on a loopback port: answers 200 ``{}`` and keeps the headers of every request."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        provider = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                provider.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.send_json(200, {})

        self.server = LocalServer(Handler, "provider").start()
        self.url = f"{self.server.origin}/v1/messages"

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def receiver():
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def provider():
    provider = Provider()
    yield provider
    provider.stop()


def _cli(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "appliance", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def _slots(spans: list[ReceivedSpan], job: str, outcome: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == f"slot {job}" and s.attributes.get("appliance.outcome") == outcome]


def _children(spans: list[ReceivedSpan], parents: list[ReceivedSpan]) -> list[ReceivedSpan]:
    ids = {p.span_id for p in parents}
    return [s for s in spans if s.parent_span_id in ids]


def _kinds(spans: list[ReceivedSpan]) -> set[str | None]:
    return {s.attributes.get("db.system") or s.attributes.get("db.system.name") or
            ("http" if "http.request.method" in s.attributes or "http.method" in s.attributes else None)
            for s in spans}


def test_every_slot_is_a_span_with_its_calls_as_children_and_its_ids_in_the_log(
        tmp_path, app_env, redis_server, receiver, provider):
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", JOBS), list(JOBS),
                     OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="appliance-under-test",
                     OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test", OTEL_BSP_SCHEDULE_DELAY="200")
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.hset("test:param:traced", "url", provider.url)
    client.hset("test:param:isolated", "url", provider.url)
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:  # the last run of a worker long gone
        conn.execute("SELECT appliance_record_slot('late', date_trunc('second', now()) - make_interval(secs => %s),"
                     " 'success', NULL, NULL, 'gone', NULL)", (DOWNTIME,))
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_for_log("worker started")
        _cli(env, "jobs", "pause", "held", "--reason", "held for the tracing test")
        wait_until(lambda: len(_slots(receiver.spans(), "traced", "success")) >= 2
                   and _slots(receiver.spans(), "flaky", "failure") and _slots(receiver.spans(), "held", "paused")
                   and _children(receiver.spans(), _slots(receiver.spans(), "isolated", "success")),
                   30, "spans of successful, failed and paused slots, and of a run's child process")
    finally:
        code, _ = worker.terminate()
    assert code == 0
    spans = receiver.spans()
    assert set(receiver.paths) == {"/v1/traces"}
    by_id = {s.span_id: s for s in spans}

    # One span per run of a slot, with the slot's identity, its fence and its outcome.
    ran = _slots(spans, "traced", "success")
    for span in ran:
        a = span.attributes
        assert a["appliance.job"] == "traced" and a["appliance.trigger"] == "schedule" and a["appliance.attempt"] == 1
        assert a["appliance.fence"] >= 1 and a["appliance.run_id"] and a["appliance.slot"].endswith("Z")
        assert span.parent_span_id == "" and span.kind == "SPAN_KIND_INTERNAL" and not span.is_error
        assert span.resource["service.name"] == "appliance-under-test"
        assert span.resource["deployment.environment"] == "test" and span.resource["appliance.program"] == "worker"
    assert len({s.attributes["appliance.slot"] for s in ran}) == len(ran)

    # A failure's span has status error; a paused slot has a span of its own saying why it did not run.
    failed = _slots(spans, "flaky", "failure")[0]
    assert failed.is_error and "flaky job failed on purpose" in failed.status_message
    paused = _slots(spans, "held", "paused")[0]
    assert "held for the tracing test" in paused.attributes["appliance.reason"]
    assert not paused.is_error and "appliance.fence" not in paused.attributes
    missed = _slots(spans, "late", "missed")
    assert len(missed) >= DOWNTIME - 2, "every slot from the last run to the worker's start (more if it started slowly)"
    assert len({s.attributes["appliance.slot"] for s in missed}) == len(missed)
    assert all(s.attributes["appliance.reason"] == "no worker ran it within its grace" for s in missed)

    # The job's PostgreSQL, Redis and HTTP calls are children of its slot's span, in its trace.
    run = ran[0]
    children = [s for s in spans if s.parent_span_id == run.span_id]
    assert {"postgresql", "redis", "http"} <= _kinds(children), [(s.name, s.attributes) for s in children]
    assert all(s.kind == "SPAN_KIND_CLIENT" and s.trace_id == run.trace_id for s in children)
    statements = [str(s.attributes.get("db.statement", s.attributes.get("db.query.text", ""))) for s in children
                  if s.attributes.get("db.system") == "postgresql"]
    assert statements == ["SELECT 1"], "the job's statement; the ledger's own (appliance_*) are not spans"
    assert sorted(s.name for s in children if s.attributes.get("db.system") == "redis") == ["HGET", "RPUSH"], \
        "the job's commands; the lease's own (EVALSHA) are not spans"

    # isolation = process: the child process continues its slot's trace; its calls are the slot span's children.
    isolated = [s for s in _slots(spans, "isolated", "success") if _children(spans, [s])]
    assert isolated, "a run in a child process whose calls were exported"
    calls = _children(spans, isolated[:1])
    assert {"postgresql", "redis", "http"} <= _kinds(calls) and {s.trace_id for s in calls} == {isolated[0].trace_id}
    assert {s.resource["appliance.program"] for s in calls} == {"worker"}

    # The provider received the request's span as its parent in the W3C traceparent header.
    http_spans = {(s.trace_id, s.span_id) for s in spans if s.kind == "SPAN_KIND_CLIENT"
                  and by_id.get(s.parent_span_id, s).name in ("slot traced", "slot isolated")}
    sent = [h["traceparent"].split("-") for h in provider.headers]
    assert sent and all(len(parts) == 4 and parts[0] == "00" for parts in sent)
    assert {(parts[1], parts[2]) for parts in sent} <= http_spans

    # The worker's own calls outside any slot (heartbeat, loop) start no trace: every client span has a parent.
    assert all(s.parent_span_id for s in spans if s.kind == "SPAN_KIND_CLIENT")

    # Every log line of a run carries the ids of its slot's span (or of the call in progress under it).
    lines = [line for line in worker.log_lines() if line.get("run_id") == run.attributes["appliance.run_id"]
             or (line.get("msg") == "traced job called its services" and line.get("trace_id") == run.trace_id)]
    assert {line["msg"] for line in lines} >= {"run started", "run ended", "traced job called its services"}
    for line in lines:
        assert line["trace_id"] == run.trace_id and line["span_id"] == run.span_id
    assert all("trace_id" not in line for line in worker.log_lines() if line.get("msg") == "worker started")


@pytest.mark.parametrize("setting", ["unset", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER=none"])
def test_tracing_off_loads_no_sdk_and_sends_nothing(tmp_path, app_env, redis_server, receiver, setting):
    """Without an exporter, or with one switched off, the worker imports neither the trace SDK, nor the exporter,
    nor an instrumentation (redis-py itself imports the metrics SDK when it is installed, for metrics of its own
    that stay off), sends nothing and writes no trace ids."""
    extra = {"unset": {}, "OTEL_SDK_DISABLED": {"OTEL_SDK_DISABLED": "true"},
             "OTEL_TRACES_EXPORTER=none": {"OTEL_TRACES_EXPORTER": "none"}}[setting]
    if setting != "unset":
        extra["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", {"traced": JOBS["traced"]}), ["traced"],
                     **extra)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_for_log("worker started")
        wait_until(lambda: records(client, "traced"), 10, "a run of the job")
    finally:
        worker.terminate()
    loaded = records(client, "traced")[0]["modules"]
    assert not [m for m in loaded if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter",
                                                   "opentelemetry.instrumentation"))], loaded
    assert all("trace_id" not in line for line in worker.log_lines())
    assert receiver.requests == 0


def test_a_run_in_the_foreground_is_traced_as_the_workers_are(tmp_path, app_env, redis_server, receiver):
    """``appliance jobs run NAME``: the manual run's span (trigger ``cli``, its reason) from the command's own process,
    exported before it exits, with its job's calls as children."""
    env = worker_env(app_env, write_jobs_file(tmp_path / "jobs.toml", {"traced": JOBS["traced"]}), ["traced"],
                     OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    _cli(env, "jobs", "run", "traced")
    (span,) = [s for s in receiver.spans() if s.name == "slot traced"]
    assert span.attributes["appliance.trigger"] == "cli" and span.attributes["appliance.outcome"] == "success"
    assert span.resource["service.name"] == "appliance-cli" and span.attributes["appliance.fence"] >= 1
    assert {"postgresql", "redis"} <= _kinds(_children(receiver.spans(), [span]))
