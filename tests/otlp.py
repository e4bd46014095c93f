"""An OTLP/HTTP trace receiver for the tests: a real HTTP server on a loopback port that accepts what an
OpenTelemetry exporter POSTs to ``/v1/traces`` and decodes it with the protocol's own messages
(``ExportTraceServiceRequest`` of ``opentelemetry-proto``), as a collector would.

No collector binary can be had here; the receiver speaks the collector's side of the wire protocol (protobuf body,
``application/x-protobuf``, an ``ExportTraceServiceResponse`` answer), so the exporter under test is the real one.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.local_http import JsonHandler, LocalServer


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    attributes: dict[str, Any]
    status: str
    status_message: str
    resource: dict[str, Any] = field(repr=False)

    @property
    def is_error(self) -> bool:
        return self.status == "STATUS_CODE_ERROR"


class Receiver:
    """``Receiver().start()``; ``endpoint`` is what ``OTEL_EXPORTER_OTLP_ENDPOINT`` names; ``spans()`` what
    arrived so far; ``requests`` counts the export requests and ``paths`` their paths."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.paths: list[str] = []
        receiver = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                receiver.received(self.path, body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = LocalServer(Handler, "otlp-receiver")
        self.endpoint = self.server.origin

    def start(self) -> Receiver:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def received(self, path: str, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(), kind=Span.SpanKind.Name(span.kind),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        status=Status.StatusCode.Name(span.status.code), status_message=span.status.message,
                        resource=resource))
        with self._lock:
            self.requests += 1
            self.paths.append(path)
            self._spans.extend(spans)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)
