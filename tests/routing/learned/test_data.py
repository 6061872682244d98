from __future__ import annotations

import json
from pathlib import Path

import pytest

from tierline.routing.learned.data import DataError, load_models_json, load_outcomes, load_prompts


def test_load_filters(synth_file: Path) -> None:
    all_ = load_outcomes(synth_file, split="all", skip_contaminated=False)
    assert len(all_) == 400
    train = load_outcomes(synth_file, split="train")
    test = load_outcomes(synth_file, split="test")
    assert all(e.split == "train" for e in train)
    assert len(train) + len(test) == 399  # one contaminated line dropped
    assert "synth/5" not in {e.id for e in train + test}
    assert len(load_prompts(synth_file)) == 400


def test_overlap_flag(tmp_path: Path) -> None:
    rec = {"split": "test", "messages": [{"role": "user", "content": "x"}],
           "outcomes": {"a": {"score": 1.0, "cost_usd": None}}, "flags": ["train_test_overlap"]}
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    assert len(load_outcomes(p)) == 1
    assert load_outcomes(p, skip_overlap=True) == []


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "invalid JSON"),
        ('{"messages": [{"role": "user", "content": "q"}]}', "missing 'outcomes'"),
        ('{"messages": [{"role": "user", "content": "q"}], "outcomes": {"a": {"score": 2}}}',
         "outside [0, 1]"),
        ('{"outcomes": {}}', "no 'messages'"),
        ("[1, 2]", "not a JSON object"),
        ('{"messages": [{"role": "user", "content": 3}], "outcomes": {}}', "a string or a list"),
        ('{"prompt": "q", "outcomes": {"a": {"score": 1, "cost_usd": -0.5}}}',
         "cost_usd of 'a' must be finite and >= 0"),
        ('{"prompt": "q", "outcomes": {"a": {"score": 1, "cost_usd": NaN}}}', "cost_usd of 'a'"),
        ('{"prompt": "q", "outcomes": {"a": {"score": 1, "cost_usd": Infinity}}}',
         "cost_usd of 'a'"),
        ('{"prompt": "q", "outcomes": {"a": {"score": 1, "cost_usd": "0.1"}}}',
         "cost_usd of 'a' is not a number"),
        ('{"prompt": "q", "outcomes": {"a": {"score": NaN}}}', "outside [0, 1]"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    p = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}], "outcomes": {"a": {"score": 1}}}
    p.write_text(json.dumps(good) + "\n\n" + line + "\n")
    with pytest.raises(DataError) as ei:
        load_outcomes(p)
    assert f"{p}:3:" in str(ei.value)
    assert needle in str(ei.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot open"):
        load_outcomes(tmp_path / "nope.jsonl")


def test_prompt_is_the_users_turns_with_content_parts(tmp_path: Path) -> None:
    """The text a router is trained on is what the gateway featurises: user turns only."""
    rec = {"messages": [{"role": "system", "content": "SYS"},
                        {"role": "user", "content": "first"},
                        {"role": "assistant", "content": "ANSWER"},
                        {"role": "user", "content": [{"type": "text", "text": "second"},
                                                     {"type": "image_url", "image_url": {}}]}],
           "outcomes": {"a": {"score": 1}}}
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    assert load_outcomes(p)[0].text == "first\nsecond"


def test_bare_and_boolean_scores(tmp_path: Path) -> None:
    """`{"m": 0.5}` is `{"m": {"score": 0.5}}`; true / false are 1.0 / 0.0."""
    rec = {"messages": [{"role": "user", "content": "q"}],
           "outcomes": {"a": 0.5, "b": {"score": True}, "c": False}}
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    oc = load_outcomes(p)[0].outcomes
    assert (oc["a"].score, oc["b"].score, oc["c"].score) == (0.5, 1.0, 0.0)
    assert oc["a"].cost_usd is None


def test_models_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No default file: no prices. A given or present file must be valid."""
    monkeypatch.setenv("TIERLINE_ROUTING_DATA", str(tmp_path))
    assert load_models_json() == {}
    with pytest.raises(DataError, match="cannot read"):
        load_models_json(tmp_path / "nope.json")
    (tmp_path / "models.json").write_text('{"m": {"input_usd_per_mtok": NaN}}')
    with pytest.raises(DataError, match=r"m\.input_usd_per_mtok must be a finite number"):
        load_models_json()
    (tmp_path / "models.json").write_text('{"m": {"input_usd_per_mtok": 1, "x": null}}')
    assert load_models_json() == {"m": {"input_usd_per_mtok": 1, "x": None}}
