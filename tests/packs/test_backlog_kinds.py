"""The kinds of ``appliance_backlog`` (what an autoscaler scales on) that the docs name are the ones the job packs
report: read from the packs' source (every ``ctx.set_backlog(KIND, ...)``), not from a second list."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKS = REPO / "appliance" / "packs"
DOCS = REPO / "docs"


def reported_kinds() -> set[str]:
    """The first argument of every ``set_backlog`` call in the packs: a string, or a module constant holding one."""
    kinds: set[str] = set()
    for path in PACKS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     for target in node.targets if isinstance(target, ast.Name)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "set_backlog":
                kind = node.args[0]
                if isinstance(kind, ast.Constant):
                    kinds.add(str(kind.value))
                else:
                    assert isinstance(kind, ast.Name) and kind.id in constants, ast.dump(kind)
                    kinds.add(constants[kind.id])
    return kinds


def test_the_packs_report_the_four_kinds():
    assert reported_kinds() == {"campaign_recipients_pending", "reminders_pending", "calls_queued",
                                "unindexed_documents"}


def test_the_metrics_table_and_the_scaling_section_name_exactly_those_kinds():
    kinds = reported_kinds()
    lines = (DOCS / "sidecar.md").read_text().splitlines()
    (row,) = [line for line in lines if line.startswith("| `appliance_backlog`")]
    named = row.split("|")[4].split(":")[0]
    assert {kind.strip() for kind in named.split(",")} == kinds
    scaling = re.search(r"`appliance_backlog\{kind\}` \(([^)]*)\)", (DOCS / "operations.md").read_text())
    assert scaling and set(re.findall(r"`([a-z_]+)`", scaling.group(1))) == kinds


def test_every_kind_a_document_shows_is_one_a_pack_reports():
    kinds = reported_kinds()
    for path in [REPO / "README.md", *DOCS.glob("*.md")]:
        text = path.read_text()
        shown = set(re.findall(r'set_backlog\("([a-z_]+)"', text))
        shown |= set(re.findall(r'"backlog": \{"([a-z_]+)"', text))
        assert shown <= kinds, (path.name, shown - kinds)
