"""The Kubernetes examples of config/kubernetes/ against schemas: the Deployment and the plain HPA against the
Kubernetes 1.30 JSON schemas shipped by the ``kubernetes-validate`` package (strict: an unknown field fails);
KEDA's ScaledObject, a custom resource those schemas do not hold, against the part of KEDA's CRD it uses
(written out below from KEDA's ScaledObject and Prometheus scaler reference). Both autoscalers must scale the
appliance's Deployment on a metric the appliance exposes."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from appliance.kernel.runtime import metrics

KUBERNETES = Path(__file__).resolve().parents[2] / "config" / "kubernetes"
VERSION = "1.30"

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string"}, "labels": _STRINGS}},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                                  "apiVersion": {"type": "string"}}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                    "properties": {
                        "type": {"const": "prometheus"},
                        "metadata": {**_STRINGS, "required": ["serverAddress", "query", "threshold"],
                                     "propertyNames": {"enum": ["serverAddress", "query", "threshold",
                                                                "activationThreshold", "namespace",
                                                                "ignoreNullValues", "unsafeSsl"]}},
                    }}},
            },
        },
    },
}


def load(name: str) -> list[dict]:
    return list(yaml.safe_load_all((KUBERNETES / name).read_text()))


def deployment_name() -> str:
    (deployment,) = [d for d in load("deployment.yaml") if d["kind"] == "Deployment"]
    return deployment["metadata"]["name"]


@pytest.mark.parametrize("name", ["deployment.yaml", "hpa.yaml", "storage.yaml", "secret.example.yaml"])
def test_the_built_in_kinds_pass_the_kubernetes_schemas(name):
    for document in load(name):
        kubernetes_validate.validate(document, VERSION, strict=True)


def test_a_misspelt_field_fails_the_kubernetes_schemas():
    (hpa,) = load("hpa.yaml")
    broken = copy.deepcopy(hpa)
    broken["spec"]["maxReplica"] = broken["spec"].pop("maxReplicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_hpa_scales_the_deployment_on_the_backlog_metric():
    (hpa,) = load("hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment_name()
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == metrics.BACKLOG._name == "appliance_backlog"
    assert hpa["spec"]["minReplicas"] >= 1, "the jobs are scheduled: never scale to zero"


def test_the_keda_scaled_object_matches_its_schema_and_queries_the_backlog():
    (scaled,) = load("keda-scaledobject.yaml")
    jsonschema.validate(scaled, SCALED_OBJECT)
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment_name()
    assert spec["minReplicaCount"] >= 1 and spec["maxReplicaCount"] > spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert "appliance_backlog" in trigger["metadata"]["query"]
    assert float(trigger["metadata"]["activationThreshold"]) < float(trigger["metadata"]["threshold"])
    broken = copy.deepcopy(scaled)
    broken["spec"]["triggers"][0]["metadata"]["treshold"] = "100"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCALED_OBJECT)
