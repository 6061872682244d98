"""The built-in catalog's data-policy flags: set explicitly for every hosted provider (the model
defaults would silently claim "no training"), and the same as docs/catalog.md "Data policy"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierline.catalog import table

CATALOG = Path(table.__file__).with_name("catalog.yaml")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "catalog.md"
FLAGS = ("zero_data_retention", "trains_on_inputs")


@pytest.fixture(scope="module")
def providers() -> dict[str, dict[str, Any]]:
    raw = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    return raw["providers"]


def test_hosted_providers_set_both_flags(providers: dict[str, dict[str, Any]]) -> None:
    hosted = {n: s for n, s in providers.items() if s.get("wire") != "embedded"}
    assert len(hosted) >= 11
    for name, spec in hosted.items():
        for flag in FLAGS:
            assert flag in spec, f"{name}: {flag} is not set explicitly"
            assert isinstance(spec[flag], bool), f"{name}: {flag} is not a boolean"


def _docs_rows() -> dict[str, list[str]]:
    if not DOCS.exists():
        pytest.skip("docs/catalog.md is not available")
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Data policy", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("provider", "---"):
            rows[cells[0]] = cells
    return rows


def _yes(cell: str) -> bool:
    word = re.match(r"\W*(\w+)", cell)
    assert word and word.group(1) in ("yes", "no"), cell
    return word.group(1) == "yes"


def test_docs_table_matches_flags(providers: dict[str, dict[str, Any]]) -> None:
    rows = _docs_rows()
    assert set(rows) == set(providers)
    for name, spec in providers.items():
        zdr, trains = rows[name][1], rows[name][2]
        assert _yes(zdr) == spec["zero_data_retention"], name
        assert _yes(trains) == spec["trains_on_inputs"], name
