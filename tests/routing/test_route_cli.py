"""`tierline route PROMPT --explain`: the decision offline, with the shipped learned router."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tierline.cli import main

CONFIG = """
catalog: {builtin: false}
providers:
  us: {base_url: "http://127.0.0.1:9/v1", requires_key: false, region: us}
  eu: {base_url: "http://127.0.0.1:9/v1", requires_key: false, region: eu}
deployments:
  - {name: us/strong, provider: us, model: s, price: {input: 10, output: 30},
     profile: gpt-4-1106-preview}
  - {name: eu/weak, provider: eu, model: w, price: {input: 0.6, output: 0.6},
     profile: mixtral-8x7b-instruct-v0.1}
"""


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(CONFIG)
    return str(p)


def test_route_explain(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "What is 2+2?", "--config", cfg, "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("route: learned: ")
    assert "score us/strong: quality=" in out and "score eu/weak: quality=" in out


def test_route_json_with_a_filter(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "Prove Fermat's little theorem.", "--config", cfg,
                 "--control", "region=eu", "--json"]) == 0
    d = orjson.loads(capsys.readouterr().out)
    assert d["chain"] == ["eu/weak"]
    assert d["filtered"] == {"us/strong": "region 'us' is not 'eu'"}


def test_route_bad_control_is_a_clean_error(cfg: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "x", "--config", cfg, "--control", "zdr=perhaps"]) == 2
    assert "zdr" in capsys.readouterr().err
