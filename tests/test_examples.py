"""Every example config loads, validates and builds a catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierline.catalog.load import build_catalog
from tierline.config import load_config

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    cat = build_catalog(load_config(path))
    assert "local/smollm2-135m-instruct" in cat.deployments
