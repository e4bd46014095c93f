"""The sidecar's admin API requests as OpenTelemetry server spans, from the gunicorn workers' own exporters (each
builds its own after the fork), checked over the real wire protocol: an OTLP/HTTP receiver in the test decodes the
protobuf export (``tests.otlp``). Real gunicorn, redis-server and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from tests.otlp import Receiver
from tests.services import wait_until
from tests.sidecar.cluster import ADMIN_TOKEN
from tests.sidecar.processes import SidecarProcess, process_env

pytestmark = pytest.mark.process

#: A caller's span: the request's server span must be its child, in its trace.
TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_admin_requests_are_server_spans_in_the_callers_trace_and_probes_are_not_traced(tmp_path, sidecar_env):
    receiver = Receiver().start()
    env = process_env(sidecar_env, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="200",
                      LOG_FORMAT="json")
    sidecar = SidecarProcess(env, tmp_path / "sidecar.log")
    try:
        sidecar.wait_ready()
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        for path in ("/api/jobs", "/api/history", "/health"):
            assert httpx.get(sidecar.url + path, headers=headers, timeout=10).status_code in (200, 503)

        def exported():
            servers = [s for s in receiver.spans() if s.kind == "SPAN_KIND_SERVER"]
            return servers if len(servers) >= 2 else None

        servers = wait_until(exported, 15, "the server spans of two admin requests")
    finally:
        sidecar.stop()
        receiver.stop()
    routes = {s.attributes.get("http.route") for s in servers}
    assert routes == {"/api/jobs", "/api/history"}, routes  # /health and /health/live (probes) are not traced
    for span in servers:
        assert span.trace_id == TRACE_ID and span.parent_span_id == PARENT_ID
        assert span.resource["service.name"] == "appliance-sidecar"
        assert span.resource["appliance.program"] == "sidecar"
        assert span.attributes.get("http.response.status_code", span.attributes.get("http.status_code")) == 200
    jobs = next(s for s in servers if s.attributes["http.route"] == "/api/jobs")
    calls = [s for s in receiver.spans() if s.parent_span_id == jobs.span_id]
    assert calls and all(s.kind == "SPAN_KIND_CLIENT" and s.attributes.get("db.system") == "redis" for s in calls)
