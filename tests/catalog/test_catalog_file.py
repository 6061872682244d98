"""The shipped catalog file validates and is internally consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tierline.catalog import table
from tierline.catalog.model import Deployment, ProviderSpec

CATALOG = Path(table.__file__).with_name("catalog.yaml")
TIERS = {"frontier", "strong", "fast", "cheap"}
VENDORS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "together": "TOGETHER_API_KEY",
    "fireworks": "FIREWORKS_API_KEY",
    "groq": "GROQ_API_KEY",
    "cerebras": "CEREBRAS_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "baseten": "BASETEN_API_KEY",
    "replicate": "REPLICATE_API_TOKEN",
    "mistral": "MISTRAL_API_KEY",
}
PROFILES = {
    "gpt-4-1106-preview",
    "mixtral-8x7b-instruct-v0.1",
    "llama-3.1-8b-instruct",
    "llama-3.1-nemotron-51b-instruct",
    "llama-3.3-nemotron-super-49b-v1",
    "gemma-2-9b-it",
    "qwen2.5-7b-instruct",
    "mistral-7b-instruct-v0.3",
    "codegemma-7b",
    "llama3-chatqa-1.5-70b",
    "llama3-chatqa-1.5-8b",
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def providers(raw: dict[str, Any]) -> dict[str, ProviderSpec]:
    return {
        name: ProviderSpec(name=name, **(spec or {})) for name, spec in raw["providers"].items()
    }


@pytest.fixture(scope="module")
def deployments(raw: dict[str, Any]) -> list[Deployment]:
    return [Deployment(**d) for d in raw["deployments"]]


def test_header(raw: dict[str, Any]) -> None:
    assert raw["version"] == 1
    assert str(raw["date"]).startswith("20")


def test_names_unique(deployments: list[Deployment]) -> None:
    names = [d.name for d in deployments]
    assert len(names) == len(set(names))


def test_name_is_provider_prefixed(deployments: list[Deployment]) -> None:
    for d in deployments:
        assert d.name.startswith(f"{d.provider}/"), d.name


def test_providers_exist(providers: dict[str, ProviderSpec], deployments: list[Deployment]) -> None:
    for d in deployments:
        assert d.provider in providers, d.name


def test_prices_non_negative(deployments: list[Deployment]) -> None:
    for d in deployments:
        p = d.price
        for value in (p.input, p.cached_input, p.cache_write, p.output, p.reasoning):
            assert value is None or value >= 0, d.name
        if p.cached_input is not None:
            assert p.cached_input <= p.input, d.name


def test_tiers(deployments: list[Deployment]) -> None:
    for d in deployments:
        assert d.tier in TIERS, d.name


def test_profiles_known(deployments: list[Deployment]) -> None:
    for d in deployments:
        assert d.profile is None or d.profile in PROFILES, d.name


def test_every_vendor_has_a_deployment(
    providers: dict[str, ProviderSpec], deployments: list[Deployment]
) -> None:
    used = {d.provider for d in deployments}
    for vendor in [*VENDORS, "local"]:
        assert vendor in providers, vendor
        assert vendor in used, vendor


def test_vendors_need_only_their_key(providers: dict[str, ProviderSpec]) -> None:
    for vendor, env in VENDORS.items():
        spec = providers[vendor]
        assert spec.api_key_env == env, vendor
        assert spec.api_key is None, vendor
        assert spec.requires_key, vendor
        assert spec.base_url and spec.base_url.startswith("https://"), vendor
    assert providers["anthropic"].wire == "anthropic"
    assert providers["replicate"].wire == "replicate"
    assert providers["local"].wire == "embedded"
    assert not providers["local"].requires_key


def test_eu_hosted_deployments(
    providers: dict[str, ProviderSpec], deployments: list[Deployment]
) -> None:
    """Data residency works out of the box: hosted (non-embedded) `region: eu` deployments,
    a strong and a cheap one, on an OpenAI-wire vendor that needs only its key."""
    eu = [d for d in deployments
          if (d.region or providers[d.provider].region) == "eu"
          and providers[d.provider].wire != "embedded"]
    assert {d.tier for d in eu} >= {"strong", "cheap"}, [d.name for d in eu]
    for d in eu:
        spec = providers[d.provider]
        assert spec.wire == "openai" and spec.api_key_env in VENDORS.values(), d.name
        assert d.price.input > 0 and d.price.output > 0, d.name


def test_mistral_uses_the_eu_endpoint_without_stream_options(
    providers: dict[str, ProviderSpec]
) -> None:
    """The global api.mistral.ai gives no region guarantee; Mistral rejects `stream_options`."""
    spec = providers["mistral"]
    assert spec.base_url == "https://api.eu.mistral.ai/v1" and spec.region == "eu"
    assert spec.send_stream_options is False
    assert all(s.send_stream_options for n, s in providers.items() if n != "mistral")


def test_local_model(deployments: list[Deployment]) -> None:
    local = next(d for d in deployments if d.name == "local/smollm2-135m-instruct")
    assert local.price.input == 0 and local.price.output == 0
    assert local.n_ctx == 2048 and local.open_weight


def test_table_renders(capsys: pytest.CaptureFixture[str]) -> None:
    table.main([str(CATALOG)])
    out = capsys.readouterr().out
    assert "| `openai/gpt-5.6-luna` |" in out
    assert out.count("\n| `") == len(yaml.safe_load(CATALOG.read_text())["deployments"])


def _same_model(upstream_id: str) -> str:
    """Vendor-neutral key of an upstream model id: the last path part, lower-cased, '.' as
    '-' (``openai/gpt-oss-120b``, ``accounts/fireworks/models/gpt-oss-120b`` -> one key)."""
    return upstream_id.rsplit("/", 1)[-1].lower().replace(".", "-")


def test_one_model_has_one_tier_and_profile_across_vendors(
    deployments: list[Deployment],
) -> None:
    """Tiers and router profiles rate the model: the same model served by several vendors
    must not be predicted better or worse depending on who serves it."""
    seen: dict[str, tuple[str | None, str | None, str]] = {}
    for d in deployments:
        key = _same_model(d.model)
        if key in seen:
            tier, profile, first = seen[key]
            assert (d.tier, d.profile) == (tier, profile), (
                f"{d.name} rates {key} as ({d.tier}, {d.profile}); {first} as ({tier}, {profile})"
            )
        else:
            seen[key] = (d.tier, d.profile, d.name)
    assert len(seen) < len(deployments)  # the catalog does serve models from several vendors


def test_the_embedded_window_is_what_one_request_gets() -> None:
    """/v1/models advertised 8192 for the built-in embedded model, whose requests get 2048
    tokens (n_ctx); an embedded deployment with no n_ctx got 2048 but was routed on its
    context_window."""
    from tierline.catalog.load import build_catalog
    from tierline.config import parse_config
    from tierline.gateway.app import create_app, model_entry
    from tierline.routing.filters import window_of

    name = "local/smollm2-135m-instruct"
    config = parse_config({}, "default")
    gw = create_app(config)
    assert model_entry(gw.catalog.deployments[name], gw)["tierline"]["context_window"] == 2048
    assert window_of(gw.catalog.deployments[name]) == 2048

    def built(**dep: Any) -> Deployment:
        cfg = parse_config({"catalog": {"builtin": False},
                            "providers": {"loc": {"wire": "embedded", "requires_key": False}},
                            "deployments": [{"name": "loc/m", "provider": "loc",
                                             "model": "m.gguf", **dep}]}, "t")
        return build_catalog(cfg).deployments["loc/m"]

    assert built().context_window == 2048 and built().n_ctx == 2048
    assert built(context_window=32768).context_window == 2048  # the engine's default n_ctx
    assert built(n_ctx=4096, parallel=4).context_window == 4096  # per slot, not / 4
    assert built(n_ctx=16384, context_window=8192).context_window == 8192
    assert built(context_window=1024).context_window == 1024
    over = parse_config({"deployments": [{"name": name, "provider": "local",
                                          "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                          "n_ctx": 8192}]}, "t")
    assert build_catalog(over).deployments[name].context_window == 8192
    providers, deployments, _ = table.load(CATALOG)
    out = table.render(providers, deployments)
    assert "| `local/smollm2-135m-instruct` | local | 0 / – / 0 | 2,048 |" in out
