"""The `region` filter over the shipped catalog: `region: eu` keeps the EU-hosted deployments
(and the embedded model, which keeps data on the machine) and removes every other one."""

from __future__ import annotations

import pytest
import yaml

from tierline.catalog.load import build_catalog, builtin_catalog_text
from tierline.config import parse_config
from tierline.routing.filters import Constraints
from tierline.routing.policy import Router


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch) -> Router:
    """Every shipped vendor usable: set each one's key env var to a dummy value."""
    raw = yaml.safe_load(builtin_catalog_text())
    for spec in raw["providers"].values():
        if spec.get("api_key_env"):
            monkeypatch.setenv(spec["api_key_env"], "test-key")
    config = parse_config({}, "test")
    catalog = build_catalog(config)
    assert not catalog.skipped
    return Router(catalog, config.routing)


def test_region_eu_keeps_the_eu_deployments(router: Router) -> None:
    cat = router.catalog
    eu = {n for n, d in cat.deployments.items()
          if (d.region or cat.providers[d.provider].region) == "eu"}
    assert eu and all(cat.providers[cat.deployments[n].provider].wire == "openai" for n in eu)
    d = router.route("auto", {"strategy": "cheapest"},
                     Constraints(region="eu", prompt_tokens=20), "Bonjour")
    assert set(d.chain[:-1]) == {cat.deployments[n] for n in eu}
    assert d.chain[-1].name == "local/smollm2-135m-instruct"  # last resort, region `local`
    assert set(d.detail["filtered"]) == set(cat.deployments) - eu - {d.chain[-1].name}
    assert all(why.startswith("region ") for why in d.detail["filtered"].values())


def test_region_eu_with_capabilities_and_tiers(router: Router) -> None:
    """Images need vision: an EU deployment still serves; `tier:strong` in the EU too."""
    d = router.route("auto", {"strategy": "cheapest"},
                     Constraints(region="EU", needs=frozenset({"vision", "tools"})), "x")
    assert d.chain[0].provider == "mistral"
    d = router.route("tier:strong", {"strategy": "cheapest"}, Constraints(region="eu"), "x")
    assert [x.name for x in d.chain] == ["mistral/mistral-medium-3.5"]
