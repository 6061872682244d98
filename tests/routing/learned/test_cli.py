from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tierline.routing.learned import cli

from .conftest import STRONG, WEAK, routing_data_dir


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tierline")
    cli.register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def test_train_eval_json(synth_file: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "r.npz"
    assert run(["router", "train", str(synth_file), "-o", str(out), "--bits", "12",
                "--quiet"]) == 0
    capsys.readouterr()
    assert run(["router", "eval", str(synth_file), "--router", str(out), "--strong", STRONG,
                "--weak", WEAK, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for k in ("n", "apgr", "cpt50", "cpt80", "strong_share_at_95", "cost_saving_at_95"):
        assert k in res
    assert res["n"] == 79  # test split, contaminated line excluded
    assert res["apgr"] > 0.6
    assert run(["router", "eval", str(synth_file), "--router", str(out), "--out",
                str(tmp_path / "o")]) == 0
    assert "aiq=" in capsys.readouterr().out
    assert (tmp_path / "o" / "synth.json").exists()
    assert (tmp_path / "o" / "synth.png").exists()
    assert run(["router", "calibrate", str(synth_file), "--router", str(out),
                "--strong-share", "0.3", "--weak", WEAK, "--knob", "quality"]) == 0
    t = float(capsys.readouterr().out)
    assert 0 < t < 1
    assert run(["router", "calibrate", str(synth_file), "--router", str(out),
                "--strong-share", "0.3", "--strong", STRONG, "--weak", WEAK]) == 0
    assert 0 < float(capsys.readouterr().out) < 1  # max_loss, the default knob
    costs = f"{STRONG}=0.02,{WEAK}=0.001"
    assert run(["router", "calibrate", str(synth_file), "--router", str(out),
                "--strong-share", "0.3", "--strong", STRONG, "--weak", WEAK,
                "--costs", costs, "--knob", "cost_weight"]) == 0
    lam = float(capsys.readouterr().out)
    assert 0 < lam < 1
    assert run(["router", "calibrate", str(synth_file), "--router", str(out),
                "--strong-share", "0.3", "--strong", STRONG, "--weak", WEAK,
                "--knob", "cost_weight"]) == 2
    assert "no cost given" in capsys.readouterr().err
    added = tmp_path / "added.npz"
    assert run(["router", "add-model", "--router", str(out), "--data", str(synth_file),
                "--model", WEAK, "-o", str(added)]) == 2  # base model cannot be replaced


def test_errors_exit_2(synth_file: Path, synth_router_file: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(synth_file.read_text().splitlines()[0] + "\n{oops\n")
    assert run(["router", "train", str(bad), "-o", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert run(["router", "eval", str(bad), "--router", str(synth_router_file), "--strong",
                STRONG, "--weak", WEAK, "--split", "all"]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err
    assert run(["router", "eval", str(synth_file), "--router", str(synth_router_file),
                "--strong", "no-such-model", "--weak", WEAK, "--json"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "Traceback" not in err


def test_real_data_eval_default_router(capsys: pytest.CaptureFixture[str]) -> None:
    data = routing_data_dir() / "routellm-gsm8k.jsonl"
    if not data.exists():
        pytest.skip("shared routing data not available")
    assert run(["router", "eval", str(data), "--strong", "gpt-4-1106-preview", "--weak",
                "mixtral-8x7b-instruct-v0.1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 257
    assert 0.5 < res["apgr"] <= 1.0


def test_eval_unknown_costs_and_sparse_outcomes(synth_file: Path, synth_router_file: Path,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Data from elsewhere: no cost_usd, no models.json, a model missing on some prompts."""
    lines = [json.loads(x) for x in synth_file.read_text().splitlines()]
    for i, rec in enumerate(lines):
        for o in rec["outcomes"].values():
            o["cost_usd"] = None
        if i % 20 == 0:  # 20 of the 79 test lines
            del rec["outcomes"][WEAK]
    d = tmp_path / "other"
    d.mkdir()
    data = d / "other.jsonl"
    data.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert run(["router", "eval", str(data), "--router", str(synth_router_file), "--strong",
                STRONG, "--weak", WEAK, "--json"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["n"] == 59 and res["skipped_incomplete"] == 20
    assert res["cost_saving_at_95"] is None and res["apgr"] > 0.5
    assert "no cost_usd and no list price" in cap.err and "20 prompts" in cap.err
    # many models without costs: qualities only, the cost-quality numbers null
    assert run(["router", "eval", str(data), "--router", str(synth_router_file), "--json",
                "--out", str(tmp_path / "o")]) == 0
    cap = capsys.readouterr()
    many = json.loads(cap.out)
    assert many["aiq"] is None and many["delta_vs_best_single"] is None
    assert many["single_models"][STRONG]["cost_usd"] is None
    assert many["oracle_quality"] >= many["router_best_predicted_quality"] > 0.5
    assert "AIQ and the cost curve are null" in cap.err and "--models-json" in cap.err
    assert (tmp_path / "o" / "other.json").exists() and not (tmp_path / "o" / "other.png").exists()
    assert run(["router", "eval", str(data), "--router", str(synth_router_file),
                "--models-json", str(synth_file.parent / "models.json")]) == 0
    assert "aiq=" in capsys.readouterr().out


def test_sparse_outcomes_train_and_eval(synth_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Each prompt answered by two of three models: training picks options on the prompts it
    can score (no kNN: no prompt has all three), eval leaves incomplete prompts out."""
    pytest.importorskip("sklearn")
    third = "mid-model"
    lines = [json.loads(x) for x in synth_file.read_text().splitlines()]
    for i, rec in enumerate(lines):
        oc = rec["outcomes"]
        oc[third] = {"score": oc[WEAK]["score"], "cost_usd": 0.004}
        del oc[[STRONG, WEAK, third][i % 3]]
    data = tmp_path / "sparse.jsonl"
    data.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "r.npz"
    assert run(["router", "train", str(data), "-o", str(out), "--bits", "12"]) == 0
    cap = capsys.readouterr()
    log = cap.out + cap.err
    assert "validation nan" not in log and "kNN (k, weight) (0, 0.0)" in log
    assert run(["router", "eval", str(data), "--router", str(out), "--strong", STRONG,
                "--weak", WEAK, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] > 20
    assert run(["router", "eval", str(data), "--router", str(out)]) == 2
    assert "--models" in capsys.readouterr().err
    assert run(["router", "eval", str(data), "--router", str(out), "--strong", STRONG,
                "--weak", STRONG]) == 2
    assert "two different models" in capsys.readouterr().err


def _one_line_error(rc: int, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize(("opts", "needle"), [
    (["--bits", "31"], "bits must be an integer in 10..24"),
    (["--bits", "0"], "bits must be"),
    (["--bits", "-3"], "bits must be"),
    (["--bits", "9"], "bits must be"),
    (["--shared-scale", "nan"], "shared_scale must be a finite number >= 0"),
    (["--shared-scale", "-1"], "shared_scale"),
    (["--shared-scale", "inf"], "shared_scale"),
    (["--C", "0"], "C must be a finite number > 0"),
    (["--C", "nan"], "C must be"),
])
def test_train_rejects_bad_options(synth_file: Path, tmp_path: Path, opts: list[str],
                                   needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.npz"
    _one_line_error(run(["router", "train", str(synth_file), "-o", str(out), "--quiet", *opts]),
                    capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize("n", ["0", "-1", "1"])
def test_eval_num_results_at_least_two(synth_file: Path, synth_router_file: Path, n: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(run(["router", "eval", str(synth_file), "--router", str(synth_router_file),
                         "--strong", STRONG, "--weak", WEAK, "--num-results", n]),
                    capsys, "num_results", "must be in 2..")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"m": 3}',
                                     '{"m": {"input_usd_per_mtok": -1}}', None])
def test_eval_models_json_must_be_valid(synth_file: Path, synth_router_file: Path,
                                        tmp_path: Path, content: str | None,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """An explicitly given price file is never silently ignored."""
    mj = tmp_path / "prices.json"
    if content is not None:
        mj.write_text(content)
    _one_line_error(run(["router", "eval", str(synth_file), "--router", str(synth_router_file),
                         "--strong", STRONG, "--weak", WEAK, "--models-json", str(mj)]),
                    capsys, str(mj))


@pytest.mark.parametrize("kind", ["jsonl", "missing", "npy"])
def test_router_option_must_be_a_router(synth_file: Path, tmp_path: Path, kind: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    bad = tmp_path / "bad"
    if kind == "jsonl":
        bad.write_text(synth_file.read_text())
    elif kind == "npy":
        bad = tmp_path / "bad.npy"
        np.save(bad, np.zeros(2))
    for cmd in (["eval", str(synth_file), "--strong", STRONG, "--weak", WEAK],
                ["calibrate", str(synth_file), "--strong-share", "0.3"],
                ["add-model", "--data", str(synth_file), "--model", "x", "-o",
                 str(tmp_path / "o.npz")]):
        _one_line_error(run(["router", *cmd, "--router", str(bad)]), capsys, str(bad))
    assert "pickle" not in capsys.readouterr().err


@pytest.mark.parametrize(("opts", "needle"), [
    (["--cost-per-1k", "5", "--costs", "garbage"], "expected model=USD"),
    (["--cost-per-1k", "5", "--costs", f"{STRONG}=x,{WEAK}=1"], "is not a number"),
    (["--cost-per-1k", "5", "--costs", f"{STRONG}=-1,{WEAK}=1"], "finite number >= 0"),
    (["--cost-per-1k", "5", "--costs", f"{STRONG}=1,nope=1"], "'nope' is not a profile"),
    (["--cost-per-1k", "-5", "--costs", f"{STRONG}=1,{WEAK}=0.1"], "cost per 1k requests"),
    (["--cost-per-1k", "nan", "--costs", f"{STRONG}=1,{WEAK}=0.1"], "cost per 1k requests"),
    (["--strong-share", "0.3", "--strong", "nope", "--weak", WEAK], "'nope' is not a profile"),
    (["--strong-share", "0.3", "--strong", STRONG, "--weak", "nope"],
     "'nope' is not a profile"),
    (["--strong-share", "0.3", "--knob", "quality", "--weak", "nope"],
     "'nope' is not a profile"),
    (["--strong-share", "0.3", "--strong", WEAK, "--weak", WEAK], "must differ"),
    (["--strong-share", "0.3", "--strong", WEAK, "--weak", WEAK, "--knob", "cost_weight",
      "--costs", f"{WEAK}=1"], "must differ"),
    (["--strong-share", "nan", "--strong", STRONG, "--weak", WEAK], "target share"),
])
def test_calibrate_rejects_bad_options(synth_file: Path, synth_router_file: Path,
                                       opts: list[str], needle: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(run(["router", "calibrate", str(synth_file), "--router",
                         str(synth_router_file), *opts]), capsys, needle)


def test_calibrate_cost_target_still_works(synth_file: Path, synth_router_file: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["router", "calibrate", str(synth_file), "--router", str(synth_router_file),
                "--cost-per-1k", "5", "--costs", f"{STRONG}=0.01, {WEAK}=0.001"]) == 0
    assert 0.0 <= float(capsys.readouterr().out) <= 1.0


def _labelled(tmp_path: Path, name: str, scores: list[float]) -> Path:
    p = tmp_path / f"{name}.jsonl"
    p.write_text("".join(json.dumps({"split": "train", "prompt": f"question {i} about x",
                                     "outcomes": {"new-model": s}}) + "\n"
                         for i, s in enumerate(scores)))
    return p


def test_add_model_needs_enough_prompts_and_both_outcomes(
        synth_router_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was: a profile predicting ~1.0 everywhere from 5 prompts, or from all-good labels."""
    out = tmp_path / "o.npz"
    few = _labelled(tmp_path, "few", [1.0, 0.0, 1.0, 1.0, 0.0])
    _one_line_error(run(["router", "add-model", "--router", str(synth_router_file), "--data",
                         str(few), "--model", "new-model", "-o", str(out)]),
                    capsys, "5 prompts", "at least 100")
    same = _labelled(tmp_path, "same", [1.0] * 150)
    _one_line_error(run(["router", "add-model", "--router", str(synth_router_file), "--data",
                         str(same), "--model", "new-model", "-o", str(out)]),
                    capsys, "every outcome of 'new-model' is good")
    _one_line_error(run(["router", "add-model", "--router", str(synth_router_file), "--data",
                         str(same), "--model", "new-model", "--min-prompts", "3", "-o",
                         str(out)]), capsys, "good and with bad answers")
    assert not out.exists()
    assert run(["router", "add-model", "--router", str(synth_router_file), "--data", str(few),
                "--model", "new-model", "--min-prompts", "5", "-o", str(out)]) == 0
    assert out.exists()
