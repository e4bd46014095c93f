"""The Kubernetes examples of config/kubernetes/ as operators apply them (``kubectl apply -k``): each kustomization
built as kustomize builds it (``tests.kustomize``: the few features used), and what it produces validated against the
Kubernetes 1.30 JSON schemas of the ``kubernetes-validate`` package (strict: an unknown field fails) or, for
KEDA's ScaledObject, a custom resource those schemas do not hold, against the part of KEDA's CRD it uses
(written out below from KEDA's ScaledObject and Prometheus scaler reference). Then what the pieces must agree
on: the autoscalers scale this Deployment on a metric the appliance exposes, the settings are settings the
appliance reads and no secret, the probes are the ones docs/sidecar.md recommends, the disruption budget lets a
single replica be drained."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from appliance.config import declared_settings
from appliance.kernel.contract.packs import installed_packs, load_settings
from appliance.kernel.runtime import metrics
from tests.kustomize import KUBERNETES, build, only

REPO = Path(__file__).resolve().parents[2]
VERSION = "1.30"
#: The kustomizations an operator applies: one replica, and the two ways to scale on the backlog.
BUILDS = ("", "overlays/keda", "overlays/hpa")

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
@pytest.mark.parametrize("path", BUILDS)
def test_each_kustomization_builds_resources_that_pass_their_schemas(path):
    resources = build(KUBERNETES / path)
    assert {r["kind"] for r in resources} >= {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    assert len({(r["kind"], r["metadata"]["name"]) for r in resources}) == len(resources), "no duplicate"
    for resource in resources:
        if resource["kind"] == "ScaledObject":
            jsonschema.validate(resource, SCALED_OBJECT)
        else:
            kubernetes_validate.validate(resource, VERSION, strict=True)


def test_every_manifest_is_part_of_a_kustomization():
    used = set()

    def walk(directory: Path) -> None:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used.add(directory / "kustomization.yaml")
        for entry in spec.get("resources", []) + spec.get("components", []):
            path = (directory / entry).resolve()
            walk(path) if path.is_dir() else used.add(path)

    for path in BUILDS:
        walk(KUBERNETES / path)
    manifests = {path.resolve() for path in KUBERNETES.rglob("*.yaml")} - {KUBERNETES / "secret.example.yaml"}
    assert manifests == used, sorted(str(p.relative_to(KUBERNETES)) for p in manifests ^ used)


def test_a_misspelt_field_fails_the_kubernetes_schemas():
    hpa = only(build(KUBERNETES / "overlays/hpa"), "HorizontalPodAutoscaler")
    broken = copy.deepcopy(hpa)
    broken["spec"]["maxReplica"] = broken["spec"].pop("maxReplicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_one_replica_keeps_its_volumes_and_the_overlays_share_one_qdrant():
    single = build(KUBERNETES)
    deployment = only(single, "Deployment")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert claims == {r["metadata"]["name"] for r in single if r["kind"] == "PersistentVolumeClaim"}
    assert "QDRANT_URL" not in only(single, "ConfigMap")["data"], "the bundled Qdrant"
    for path in BUILDS[1:]:
        resources = build(KUBERNETES / path)
        deployment = only(resources, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        assert not [r for r in resources if r["kind"] == "PersistentVolumeClaim"]
        assert all("persistentVolumeClaim" not in volume for volume in pod["volumes"])
        assert only(resources, "ConfigMap")["data"]["QDRANT_URL"].startswith("http://")
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        assert [p["containerPort"] for p in pod["containers"][0]["ports"]] == [3002]


def test_the_autoscalers_scale_the_deployment_on_the_backlog_metric():
    hpa = only(build(KUBERNETES / "overlays/hpa"), "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == only(build(KUBERNETES), "Deployment")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == metrics.BACKLOG._name == "appliance_backlog"
    assert hpa["spec"]["minReplicas"] >= 1, "the jobs are scheduled: never scale to zero"
    scaled = only(build(KUBERNETES / "overlays/keda"), "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "appliance"
    assert spec["minReplicaCount"] >= 1 and spec["maxReplicaCount"] > spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert "appliance_backlog" in trigger["metadata"]["query"]
    assert float(trigger["metadata"]["activationThreshold"]) < float(trigger["metadata"]["threshold"])
    broken = copy.deepcopy(scaled)
    broken["spec"]["triggers"][0]["metadata"]["treshold"] = "100"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCALED_OBJECT)


def test_the_settings_are_settings_the_appliance_reads_none_a_secret():
    resources = build(KUBERNETES)
    settings = only(resources, "ConfigMap")
    container = only(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": settings["metadata"]["name"]}},
                                    {"secretRef": {"name": "appliance-env"}}]
    for path in BUILDS:
        data = only(build(KUBERNETES / path), "ConfigMap")["data"]
        assert set(data) <= set(declared_settings(installed_packs())), "every key is a setting"
        config = load_settings(data, env_file=None)  # raises, listing every bad value
        assert not set(data) & config.secret_names, "secrets belong in the Secret"
        assert not set(data) & {"REDIS_URL", "DATABASE_URL"}, "their URLs may carry a password"


def test_the_pod_outlives_the_workers_stop():
    """SIGTERM to exit is at most SHUTDOWN_TIMEOUT + 2 s (docs/operations.md "Stopping")."""
    resources = build(KUBERNETES)
    shutdown = float(only(resources, "ConfigMap")["data"]["SHUTDOWN_TIMEOUT"])
    pod = only(resources, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= shutdown + 2
    assert pod["enableServiceLinks"] is False, "a Service named redis would set REDIS_PORT=tcp://..."


def test_the_probes_are_the_ones_the_sidecar_docs_recommend():
    recommended = re.search(r"```yaml\n(.*?)```", (REPO / "docs" / "sidecar.md").read_text(), re.S)
    assert recommended
    probes = yaml.safe_load(recommended.group(1))
    container = only(build(KUBERNETES), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == probes[probe]["httpGet"]["path"], probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live", "no I/O: an outage restarts nothing"


def test_the_disruption_budget_covers_the_pods_and_lets_one_replica_be_drained():
    resources = build(KUBERNETES)
    budget = only(resources, "PodDisruptionBudget")["spec"]
    labels = only(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert "minAvailable" not in budget and budget["maxUnavailable"] == 1
