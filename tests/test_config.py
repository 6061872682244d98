"""Config loading: strict validation with file + field path, ${ENV} interpolation,
providers without keys skipped (not a crash)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierline.catalog.load import build_catalog
from tierline.cli import main
from tierline.config import load_config
from tierline.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_file_and_path(tmp_path: Path) -> None:
    p = write(tmp_path, "server:\n  prot: 80\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in e.value.message and "server.prot" in e.value.message
    assert "unknown key" in e.value.message


def test_bad_value_says_what_was_expected(tmp_path: Path) -> None:
    p = write(tmp_path, "server:\n  port: 99999\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "server.port" in e.value.message and "65535" in e.value.message


def test_bad_deployment_field_path(tmp_path: Path) -> None:
    p = write(tmp_path, "deployments:\n  - name: x\n    provider: openai\n    model: m\n"
                        "    price: {input: -1}\n")
    with pytest.raises(ConfigError) as e:
        build_catalog(load_config(p))
    assert "deployments.0" in e.value.message and "price.input" in e.value.message


def test_env_interpolation_and_missing_key_skips(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("NOPE_KEY", raising=False)
    p = write(tmp_path, """
catalog: {builtin: false}
providers:
  a: {base_url: "${MY_URL}", api_key: "${NOPE_KEY:-}"}
  b: {base_url: "${MY_URL}", requires_key: false, region: "${REGION:-eu}"}
deployments:
  - {name: a/m, provider: a, model: m}
  - {name: b/m, provider: b, model: m}
""")
    cat = build_catalog(load_config(p))
    assert list(cat.deployments) == ["b/m"]
    assert cat.providers["b"].base_url == "http://127.0.0.1:9/v1"
    assert cat.providers["b"].region == "eu"
    assert any("'a' skipped" in s for s in cat.skipped)


def test_builtin_catalog_keys_enable_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    cat = build_catalog(load_config(None))
    assert any(d.startswith("groq/") for d in cat.deployments)
    assert "local/smollm2-135m-instruct" in cat.deployments


def test_cli_reports_config_errors_without_traceback(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "routing:\n  strategy: magic\n")
    assert main(["route", "hi", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "routing.strategy" in err and "Traceback" not in err


def test_one_routing_knob_at_a_time(tmp_path: Path) -> None:
    p = write(tmp_path, "routing:\n  quality: 0.8\n  cost_weight: 0.2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "routing" in e.value.message and "not quality and cost_weight" in e.value.message
    assert load_config(write(tmp_path, "routing:\n  quality: 0.8\n")).routing.cost_weight is None
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "routing:\n  cost_weight: .inf\n"))
    assert "routing.cost_weight" in e.value.message and "finite" in e.value.message


def test_unset_env_without_default_is_an_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """README's own example: an unset master key must not silently disable the admin API."""
    monkeypatch.delenv("TIERLINE_MASTER_KEY", raising=False)
    monkeypatch.setenv("EMPTY_ONE", "")
    p = write(tmp_path, 'keys: {master_key: "${TIERLINE_MASTER_KEY}"}\n'
                        'providers:\n  x: {base_url: "http://h/${EMPTY_ONE}"}\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = e.value.message
    assert str(p) in msg and "TIERLINE_MASTER_KEY" in msg and "keys.master_key" in msg
    assert "EMPTY_ONE" in msg and "providers.x.base_url" in msg  # set but empty: no value
    monkeypatch.setenv("TIERLINE_MASTER_KEY", "sk-master")
    monkeypatch.setenv("EMPTY_ONE", "v1")
    assert load_config(p).keys.master_key == "sk-master"
    # a default (even an empty one) is an explicit choice
    cfg = load_config(write(tmp_path, 'keys: {master_key: "${NOPE_NOPE:-}", store: "${N2:-s}"}'))
    assert cfg.keys.master_key == "" and cfg.keys.store == "s"


def test_unset_env_in_catalog_file_is_an_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAT_URL", raising=False)
    cat = tmp_path / "cat.yaml"
    cat.write_text('providers:\n  x: {base_url: "${CAT_URL}", requires_key: false}\n')
    cfg = load_config(write(tmp_path, f"catalog: {{builtin: false, files: [{cat}]}}\n"))
    with pytest.raises(ConfigError) as e:
        build_catalog(cfg)
    assert str(cat) in e.value.message and "CAT_URL" in e.value.message
    assert "providers.x.base_url" in e.value.message


LOCAL = """
catalog: {builtin: false}
providers:
  p: {base_url: "http://127.0.0.1:9/v1", requires_key: false}
"""


@pytest.mark.parametrize("field", ["input", "output", "cached_input", "reasoning"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "-1"])
def test_price_must_be_finite_and_non_negative(tmp_path: Path, field: str, value: str) -> None:
    p = write(tmp_path, LOCAL + f"deployments:\n  - {{name: p/m, provider: p, model: m, "
                                f"price: {{{field}: {value}}}}}\n")
    with pytest.raises(ConfigError) as e:
        build_catalog(load_config(p))
    assert f"deployments.0.price.{field}" in e.value.message


def test_infinite_price_route_cli_one_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Was: an OverflowError traceback from pricing (and a 500 on every request)."""
    p = write(tmp_path, LOCAL + "deployments:\n  - {name: p/m, provider: p, model: m, "
                                "price: {input: .inf, output: 1}}\n")
    assert main(["route", "hi", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "deployments.0.price.input" in err and "finite" in err and "Traceback" not in err


def test_infinite_weight_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, LOCAL + "deployments:\n  - {name: p/m, provider: p, model: m, "
                                "weight: .inf}\n")
    with pytest.raises(ConfigError) as e:
        build_catalog(load_config(p))
    assert "deployments.0.weight" in e.value.message


@pytest.mark.parametrize("kind", ["missing", "jsonl", "npy", "dir", "npz-no-header"])
def test_router_file_must_be_a_router(tmp_path: Path, kind: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    target = tmp_path / f"r.{kind}"
    if kind == "jsonl":
        target.write_text('{"prompt": "hi", "outcomes": {}}\n')
    elif kind == "npy":
        np.save(tmp_path / "r.npy", np.zeros(3))
        target = tmp_path / "r.npy"
    elif kind == "dir":
        target.mkdir()
    elif kind == "npz-no-header":
        np.savez(tmp_path / "r.npz", a=np.zeros(2))
        target = tmp_path / "r.npz"
    p = write(tmp_path, f"routing:\n  router_file: {target}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "routing.router_file" in e.value.message and str(target) in e.value.message
    assert main(["route", "hi", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "routing.router_file" in err and "Traceback" not in err and "pickle" not in err


def test_router_file_expands_user_and_loads(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from tierline.routing.learned.model import default_router_path

    shutil.copy(default_router_path(), tmp_path / "mine.npz")
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(write(tmp_path, "routing:\n  router_file: ~/mine.npz\n"))
    assert cfg.routing.router_file == str(tmp_path / "mine.npz")


def test_unknown_router_profiles(tmp_path: Path) -> None:
    for text, where in [
        ("routing:\n  tier_profiles: {fast: gpt-5}\n", "routing.tier_profiles.fast"),
        ("routing:\n  default_profile: nope\n", "routing.default_profile"),
        (LOCAL + "deployments:\n  - {name: p/m, provider: p, model: m, profile: nope}\n",
         "deployments.0.profile"),
    ]:
        with pytest.raises(ConfigError) as e:
            build_catalog(load_config(write(tmp_path, text)))
        assert where in e.value.message and "unknown router profile" in e.value.message
        assert "gpt-4-1106-preview" in e.value.message  # what the router does have
    ok = ("routing:\n  tier_profiles: {fast: qwen2.5-7b-instruct}\n"
          "  default_profile: mixtral-8x7b-instruct-v0.1\n")
    build_catalog(load_config(write(tmp_path, ok)))


@pytest.mark.parametrize(("routing", "expect"), [
    ("auto: [p/m, p/typo]", "routing.auto: unknown deployment 'p/typo'"),
    ("groups: {pair: [p/m, p/typo]}", "routing.groups.pair: unknown deployment 'p/typo'"),
    ("groups: {p/m: [p/m]}", "group name 'p/m' is a deployment's name"),
    ("groups: {auto: [p/m]}", "group name 'auto' is reserved"),
    ("groups: {'tier:fast': [p/m]}", "group name 'tier:fast' starts with `tier:`"),
    ("groups: {'a,b': [p/m]}", "group name 'a,b' contains a comma"),
    ("groups: {pair: []}", "group 'pair' lists no deployment"),
])
def test_route_names_validated(tmp_path: Path, routing: str, expect: str) -> None:
    text = LOCAL + ("deployments:\n  - {name: p/m, provider: p, model: m}\n"
                    f"routing:\n  {routing}\n")
    with pytest.raises(ConfigError) as e:
        build_catalog(load_config(write(tmp_path, text)))
    assert expect in e.value.message


def test_route_names_of_unusable_providers_are_known(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment whose provider has no key is skipped, not unknown: naming it is fine."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cat = build_catalog(load_config(write(
        tmp_path, "routing:\n  auto: [openai/gpt-5.6-luna]\n"
                  "  groups: {g: [openai/gpt-5.6-luna, local/smollm2-135m-instruct]}\n")))
    assert "openai/gpt-5.6-luna" not in cat.deployments


def test_serve_refuses_to_start_with_a_bad_router_file(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Was: the gateway started and silently routed by cheapest (a warning on first use)."""
    data = tmp_path / "outcomes.jsonl"
    data.write_text('{"prompt": "hi", "outcomes": {"m": 1}}\n')
    p = write(tmp_path, f"server: {{port: 0}}\nrouting:\n  router_file: {data}\n")
    assert main(["serve", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "routing.router_file" in err and "not a tierline router file" in err
