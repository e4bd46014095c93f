"""When tracing is on (``appliance.config.tracing``): an OTLP exporter asked for, not switched off; bad values are
problems like any setting's; the export headers are a secret."""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, load_config, masked
from appliance.kernel.runtime.redaction import Redactor

ENDPOINT = "http://collector:4318"


@pytest.mark.parametrize(("env", "enabled"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "OTLP"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, False),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
    ({"OTEL_SERVICE_NAME": "crm", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}, False),
])
def test_tracing_is_on_only_when_an_exporter_is_asked_for_and_not_switched_off(env, enabled):
    assert load_config(env, env_file=None).tracing.enabled is enabled


@pytest.mark.parametrize(("name", "value"), [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ("OTEL_TRACES_EXPORTER", "jaeger"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ("OTEL_TRACES_SAMPLER", "sometimes"),
    ("OTEL_SDK_DISABLED", "perhaps"),
])
def test_a_bad_value_is_a_problem_naming_the_variable(name, value):
    with pytest.raises(ConfigError) as raised:
        load_config({name: value}, env_file=None)
    assert name in str(raised.value)


def test_a_sampler_ratio_is_checked_for_the_ratio_samplers():
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        load_config({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
                    env_file=None)
    load_config({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, env_file=None)


def test_the_export_headers_are_a_secret():
    config = load_config({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                          "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer s3cret-collector"}, env_file=None)
    assert config.tracing.headers == "authorization=Bearer s3cret-collector"
    assert "s3cret-collector" not in str(masked(config))
    assert "s3cret-collector" not in Redactor.from_config(config).text("headers: authorization=Bearer s3cret-collector")
