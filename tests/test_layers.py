"""The package's layers (docs/architecture.md): imports point down only, and no module imports itself back.

Every import counts, wherever it stands: at the top, inside a function, or under ``TYPE_CHECKING`` (a type
hint that points up is a dependency that points up). The graph is read from the source with ``ast``; nothing
is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "appliance"

#: Bottom first. A module belongs to the layer of its longest matching prefix; it may import its own layer and
#: the layers below. ``appliance.errors`` sits with the configuration: both are leaves every layer uses.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("settings", ("appliance", "appliance.config", "appliance.errors")),
    ("kernel", ("appliance.kernel", "appliance.sdk", "appliance.context", "appliance.fencing", "appliance.jobspec")),
    ("processes", ("appliance.worker", "appliance.sidecar", "appliance.supervise", "appliance.commands",
                   "appliance.backup", "appliance.cli", "appliance.__main__")),
    ("packs", ("appliance.packs",)),
)
#: Pairs within a layer that must stay apart: the sidecar reads what the worker publishes and never imports
#: its runtime nor the CLI; the worker knows no other process; packs never import each other.
APART = (
    ("appliance.sidecar", "appliance.worker"), ("appliance.sidecar", "appliance.commands"),
    ("appliance.worker", "appliance.sidecar"), ("appliance.worker", "appliance.commands"),
    ("appliance.worker", "appliance.supervise"), ("appliance.packs.crm", "appliance.packs.knowledge"),
    ("appliance.packs.knowledge", "appliance.packs.crm"),
)
#: Kept for code written against the old paths; the package itself uses the kernel's modules.
REEXPORTS = ("appliance.context", "appliance.fencing", "appliance.jobspec", "appliance.kernel.packs")


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            # ``from package import module`` depends on that module; ``from module import name`` on the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        for target in targets:
            resolved = _resolve(target) if target.split(".")[0] == "appliance" else None
            if resolved and resolved != name:
                found.add(resolved)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def layer(name: str) -> int:
    best, index = "", -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, i
    return index


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_every_module_has_a_layer():
    assert [name for name in MODULES if layer(name) < 0] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name):
    up = sorted(f"{target} ({LAYERS[layer(target)][0]})" for target in GRAPH[name] if layer(target) > layer(name))
    assert up == [], f"{name} ({LAYERS[layer(name)][0]}) imports a higher layer"


def test_kept_apart():
    crossing = sorted(f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets
                      for a, b in APART if _under(name, a) and _under(target, b))
    assert crossing == []


def test_nothing_inside_uses_the_old_paths():
    users = sorted(f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets
                   if target in REEXPORTS and name not in REEXPORTS)
    assert users == []


def test_the_configuration_is_a_leaf():
    """Settings import only themselves and the errors: never a job, the kernel's machinery or a process."""
    outside = sorted(f"{name} -> {target}" for name, targets in GRAPH.items() if _under(name, "appliance.config")
                     for target in targets if not _under(target, "appliance.config")
                     and target not in ("appliance", "appliance.errors"))
    assert outside == []


def test_no_import_cycle():
    """Tarjan's strongly connected components over every import: no group of modules imports itself back."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert cycles == []


def test_the_documented_old_paths_still_work():
    """Jobs written against ``appliance.context``, ``appliance.fencing``, ``appliance.errors`` and
    ``appliance.jobspec`` get the SDK's own objects."""
    from appliance import context, errors, fencing, jobspec, sdk

    assert (context.RunContext, context.CancelToken) == (sdk.RunContext, sdk.CancelToken)
    assert (fencing.check_fence, fencing.complete_slot, fencing.issue_fence) == \
        (sdk.check_fence, sdk.complete_slot, sdk.issue_fence)
    assert (errors.Cancelled, errors.LockLost, errors.ConfigError) == (sdk.Cancelled, sdk.LockLost, sdk.ConfigError)
    assert (jobspec.JobSpec, jobspec.JobFunc) == (sdk.JobSpec, sdk.JobFunc)
    from appliance.kernel import packs

    assert packs.Pack is sdk.Pack


#: What a pack may import of the appliance: the SDK and the settings reader, besides its own modules.
PACK_MAY_IMPORT = ("appliance.sdk", "appliance.config")
#: Packs written as a user would, outside the package.
USER_PACKS = (Path(__file__).resolve().parents[0] / "sample_pack.py",)


def _beyond_the_sdk(name: str, targets: set[str], own: str) -> list[str]:
    return sorted(f"{name} -> {target}" for target in targets
                  if not _under(target, own) and not any(_under(target, allowed) for allowed in PACK_MAY_IMPORT))


def test_packs_import_only_the_sdk_and_the_settings():
    """The built-in packs and a user's pack reach the appliance through ``appliance.sdk`` (and read settings with
    ``appliance.config``) only: every other module is the appliance's own and may change."""
    crossing = []
    for name, targets in GRAPH.items():
        if _under(name, "appliance.packs"):
            own = ".".join(name.split(".")[:3])
            crossing += _beyond_the_sdk(name, targets, own)
    for path in USER_PACKS:
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("appliance"):
                targets.add(_resolve(node.module or "") or "")
            elif isinstance(node, ast.Import):
                targets |= {_resolve(a.name) or "" for a in node.names if a.name.startswith("appliance")}
        crossing += _beyond_the_sdk(path.name, targets, "tests")
    assert crossing == []


def test_the_sdk_exports_what_it_says():
    from appliance import sdk

    assert sorted(sdk.__all__) == sorted(set(sdk.__all__))
    missing = [name for name in sdk.__all__ if not hasattr(sdk, name)]
    assert missing == []
