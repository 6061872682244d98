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
  a: {base_url: "${MY_URL}", api_key: "${NOPE_KEY}"}
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
