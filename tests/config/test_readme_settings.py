"""The README's tables of settings and the settings the code declares agree: every setting the configuration
reads is listed, nothing listed is unknown to it, and each default shown is the code's; so does every default
in the settings tables of docs/ (each lists a part of them).

The code's side comes from the configuration itself (``appliance.config.declared_settings``: every name an
``EnvReader`` getter was asked for from an empty environment, with its default), not from a second list.

A default cell is read as: empty, a dash or ``empty`` for no default; a value in backticks first (`` `30` (s)``,
`` `./data` (`/app/data` in the image)``) or a bare number first (``5000``) for that default, in the unit an
operator writes; words (``system CAs``, ``all``) for what an unset setting means, which only a setting without
a default may have. A row naming several settings gives one default for all, or one per setting separated by
commas.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.config import declared_settings
from appliance.kernel.contract.packs import installed_packs

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
#: The other documents with tables of settings, each of a part of them.
DOCS = sorted(path for path in (REPO / "docs").glob("*.md") if "\n| variable | default |" in path.read_text())
#: Read by scripts/install and the image build (they fetch Qdrant), not by the appliance's configuration.
OUTSIDE_THE_CONFIGURATION = {"QDRANT_DOWNLOAD_URL"}
_TICKED = re.compile(r"`([^`]*)`")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?=\s|$)")
#: What a cell holds for "no default": nothing, an en or em dash (as the tables write it), "empty".
_DASHES = ("\u2013", "\u2014")
_NONE = ("", *_DASHES, "empty")


def split_outside(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` where it is outside backticks and parentheses."""
    parts, depth, ticked, current = [], 0, False, ""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "`":
            ticked = not ticked
        elif not ticked and char in "()":
            depth += 1 if char == "(" else -1
        if not ticked and depth == 0 and text.startswith(separator, i):
            parts.append(current)
            current, i = "", i + len(separator)
            continue
        current += char
        i += 1
    return [*parts, current]


def readme_settings(document: Path = README) -> dict[str, str]:
    """name -> default cell of every row of ``document``'s tables headed ``variable | default | meaning``."""
    settings: dict[str, str] = {}
    in_table = False
    for line in document.read_text().splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [cell.strip() for cell in split_outside(line.strip().strip("|"), "|")]
        if cells[:2] == ["variable", "default"]:
            in_table = True
            continue
        if not in_table or set(cells[0]) <= set("- "):
            continue
        names = _TICKED.findall(cells[0])
        defaults = split_outside(cells[1], ", ")
        if len(defaults) != len(names):
            defaults = [cells[1]] * len(names)
        for name, default in zip(names, defaults, strict=True):
            assert name not in settings, f"{name} is listed twice"
            settings[name] = default.strip()
    return settings


def shown_default(cell: str) -> str | None:
    """The default a cell shows: "" for none, the first ticked value, or None for words."""
    if cell in _NONE or cell.startswith(tuple(dash + " " for dash in _DASHES)):
        return ""
    if cell.startswith("`"):
        return _TICKED.match(cell).group(1)  # type: ignore[union-attr]
    number = _NUMBER.match(cell)
    return number.group(0) if number else None


def same(shown: str, declared: str) -> bool:
    try:
        return float(shown) == float(declared)
    except ValueError:
        return shown == declared


@pytest.fixture(scope="module")
def declared() -> dict[str, str]:
    return declared_settings(installed_packs())


def test_the_readme_lists_every_declared_setting_and_no_other(declared):
    listed = readme_settings()
    assert len(listed) > 90
    assert sorted(set(declared) - set(listed)) == [], "read by the code, missing from the README"
    assert sorted(set(listed) - set(declared) - OUTSIDE_THE_CONFIGURATION) == [], "in the README, read nowhere"


@pytest.mark.parametrize("document", [README, *DOCS], ids=lambda path: path.name)
def test_each_settings_table_shows_the_codes_defaults(declared, document):
    listed = readme_settings(document)
    assert len(listed) > 5
    wrong = {}
    for name, cell in listed.items():
        if name in OUTSIDE_THE_CONFIGURATION:
            continue
        assert name in declared, f"{document.name} lists {name}, which the code does not read"
        shown = shown_default(cell)
        if shown is None:
            if declared[name] != "":
                wrong[name] = f"{document.name} describes {cell!r}; the code's default is {declared[name]!r}"
        elif not same(shown, declared[name]):
            wrong[name] = f"{document.name} {shown!r}, code {declared[name]!r}"
    assert wrong == {}


def test_the_documents_with_settings_tables_are_found():
    assert [path.name for path in DOCS] == ["jobs.md", "knowledge.md", "sidecar.md"]


def test_the_readers_rules_catch_a_wrong_default():
    """The comparison itself: a changed number, a changed word and a description of a set default all fail."""
    assert not same("3", "5") and not same("info", "debug") and same("5", "5.0") and same("30", "30")
    assert shown_default("`0.8` (s)") == "0.8" and shown_default("system CAs") is None
    assert shown_default("\u2013") == "" and shown_default("") == "" and shown_default("5000") == "5000"
    assert shown_default("by `CHANNEL`") is None and shown_default("5% of it") is None
    assert split_outside("-, by `a, b`, `10` (s, ms)", ", ") == ["-", "by `a, b`", "`10` (s, ms)"]
