"""``kustomize build`` for the features config/kubernetes/ uses, so that the tests validate what an operator's
``kubectl apply -k`` sends, with no kustomize binary. Anything else in a kustomization fails, rather than being
ignored. Checked once against kubectl 1.32's kustomize (v5.5.0): the same resources, field for field, for the
three kustomizations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonpatch
import yaml

KUBERNETES = Path(__file__).resolve().parents[1] / "config" / "kubernetes"
#: What the kustomizations here may use; anything else would be ignored by ``build`` below, so it fails.
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "components", "patches"}


def build(directory: Path) -> list[dict[str, Any]]:
    """``kustomize build directory`` for the features config/kubernetes uses: ``resources`` (files, and
    directories holding a kustomization), ``components``, and ``patches`` (a JSON 6902 list for a ``target``, or
    a resource named by kind and name with ``$patch: delete``)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(spec) <= KUSTOMIZATION_FIELDS, set(spec) - KUSTOMIZATION_FIELDS
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        resources += build(path) if path.is_dir() else [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for entry in spec.get("components", []):
        component = yaml.safe_load((directory / entry / "kustomization.yaml").read_text())
        assert component["kind"] == "Component" and set(component) <= KUSTOMIZATION_FIELDS
        resources = patched(resources, component.get("patches", []))
    return patched(resources, spec.get("patches", []))


def patched(resources: list[dict[str, Any]], patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for entry in patches:
        patch = yaml.safe_load(entry["patch"])
        if isinstance(patch, dict):
            assert patch.pop("$patch") == "delete", "only deletions are written as a resource"
            gone = [r for r in resources if named(r, patch["kind"], patch["metadata"]["name"])]
            assert len(gone) == 1, patch
            resources = [r for r in resources if r is not gone[0]]
            continue
        target = entry["target"]
        matches = [i for i, r in enumerate(resources) if named(r, target["kind"], target["name"])]
        assert len(matches) == 1, target
        resources[matches[0]] = jsonpatch.apply_patch(resources[matches[0]], patch)
    return resources


def named(resource: dict[str, Any], kind: str, name: str) -> bool:
    return resource["kind"] == kind and resource["metadata"]["name"] == name


def only(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind]
    return found
