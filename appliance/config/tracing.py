"""Settings of OpenTelemetry tracing: the standard ``OTEL_*`` variables the appliance reads to decide whether to
trace at all, and checks, so that a typo stops the process with exit code 2 instead of exporting nowhere.

Tracing is on when an OTLP exporter is asked for: ``OTEL_TRACES_EXPORTER=otlp``, or an endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) with ``OTEL_TRACES_EXPORTER`` unset.
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off whatever else is set. The OpenTelemetry
SDK reads the variables themselves from the process environment (not from ``.env``), as every OpenTelemetry
SDK does; the export headers, which may carry a collector's credentials, are a secret passed in from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config.env import EnvReader

HTTP_SCHEMES = ("http", "https")
#: The samplers of the OpenTelemetry SDK (``OTEL_TRACES_SAMPLER``).
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")


@dataclass(frozen=True)
class TracingConfig:
    #: Whether this process exports traces; when False the SDK is never imported.
    enabled: bool = False
    #: ``OTEL_SERVICE_NAME`` when set; otherwise each program names itself (``appliance-worker``, ...).
    service_name: str = ""
    #: ``OTEL_EXPORTER_OTLP_HEADERS`` / ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` as given (``key=value,...``).
    headers: str = ""


def load_tracing(env: EnvReader) -> TracingConfig:
    disabled = env.bool("OTEL_SDK_DISABLED", False)
    exporter = env.str("OTEL_TRACES_EXPORTER", "", choices=("otlp", "none"))
    endpoint = env.url("OTEL_EXPORTER_OTLP_ENDPOINT", "", HTTP_SCHEMES)
    traces_endpoint = env.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", HTTP_SCHEMES)
    protocol = env.str("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", choices=("http/protobuf",))
    env.str("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol, choices=("http/protobuf",))
    service = env.str("OTEL_SERVICE_NAME", "")
    env.str("OTEL_RESOURCE_ATTRIBUTES", "")
    sampler = env.str("OTEL_TRACES_SAMPLER", "parentbased_always_on", choices=SAMPLERS)
    if sampler.endswith("traceidratio"):
        env.float("OTEL_TRACES_SAMPLER_ARG", 1.0, min=0.0, max=1.0)
    else:
        env.str("OTEL_TRACES_SAMPLER_ARG", "")
    # Both read, so that both are masked wherever they are shown; the traces' own wins, as in the SDK.
    headers, traces_headers = env.secret("OTEL_EXPORTER_OTLP_HEADERS"), env.secret("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
    headers = traces_headers or headers
    wanted = exporter == "otlp" or (exporter == "" and bool(endpoint or traces_endpoint))
    return TracingConfig(enabled=wanted and not disabled, service_name=service, headers=headers)
