from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tierline.routing.learned.choose import choose
from tierline.routing.learned.data import load_outcomes
from tierline.routing.learned.model import LearnedRouter, default_router_path

from .conftest import STRONG, WEAK


def test_round_trip(synth_router_file: Path, tmp_path: Path) -> None:
    r = LearnedRouter.load(synth_router_file)
    assert sorted(r.profiles) == [STRONG, WEAK]
    p = r.predict("Question: integral matrix prime compute 17 * 23 = ?")
    assert set(p) == {STRONG, WEAK} and all(0 < v < 1 for v in p.values())
    r.save(tmp_path / "again.npz")
    r2 = LearnedRouter.load(tmp_path / "again.npz")
    texts = ["apple river colour", "integral prime matrix"]
    np.testing.assert_allclose(r.predict_many(texts), r2.predict_many(texts), atol=1e-6)
    assert r.predict_many(texts).shape == (2, 2)


def test_router_learns_difficulty(synth_router_file: Path) -> None:
    r = LearnedRouter.load(synth_router_file)
    easy = r.predict("Question 7: apple river colour apple river colour apple river")
    hard = r.predict("Question 9: integral matrix prime integral prime matrix integral prime")
    assert hard[WEAK] < easy[WEAK]
    assert hard[STRONG] - hard[WEAK] > easy[STRONG] - easy[WEAK]


def test_add_profile(synth_router_file: Path, synth_file: Path, tmp_path: Path) -> None:
    r = LearnedRouter.load(synth_router_file)
    before = r.predict_many(["apple river", "integral prime"])
    ex = load_outcomes(synth_file, split="train")
    # a new model that is good exactly where the weak one is good
    r.add_profile("new-model", [e.text for e in ex], [e.score(WEAK) for e in ex])
    assert r.profiles[-1] == "new-model"
    after = r.predict_many(["apple river", "integral prime"])
    np.testing.assert_allclose(after[:, :2], before)  # others untouched
    assert after[0, 2] > after[1, 2]
    r.save(tmp_path / "added.npz")
    r2 = LearnedRouter.load(tmp_path / "added.npz")
    assert r2.profiles == r.profiles
    np.testing.assert_allclose(r2.predict_many(["apple river"]), r.predict_many(["apple river"]))
    with pytest.raises(ValueError):
        r.add_profile(WEAK, ["x"], [1.0])


def test_choose() -> None:
    pred = {"a": 0.6, "b": 0.8, "c": 0.9}
    costs = {"a": 1.0, "b": 5.0, "c": 20.0}
    assert choose(pred, costs, quality=0.7)[0] == "b"
    assert choose(pred, costs, quality=0.5)[0] == "a"
    name, why = choose(pred, costs, quality=0.95)
    assert name == "c" and "no model reaches" in why
    assert choose(pred, costs, lam=0.0)[0] == "c"
    assert choose(pred, costs, lam=1.0)[0] == "a"
    with pytest.raises(ValueError):
        choose(pred, costs)


def test_default_router_ships_all_profiles() -> None:
    path = default_router_path()
    assert path.exists() and path.stat().st_size < 5_000_000
    r = LearnedRouter.load(path)
    for m in ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1", "qwen2.5-7b-instruct",
              "llama-3.1-8b-instruct", "codegemma-7b"):
        assert m in r.profiles
    assert len(r.profiles) == 11


def test_import_is_cheap() -> None:
    code = "import sys, tierline.routing.learned as m; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_calibrate(synth_router_file: Path, synth_file: Path) -> None:
    from tierline.routing.learned.calibrate import (
        cost_per_1k,
        threshold_for_cost,
        threshold_for_strong_share,
    )
    from tierline.routing.learned.data import load_prompts

    r = LearnedRouter.load(synth_router_file)
    texts = load_prompts(synth_file)[:100]
    t = threshold_for_strong_share(r, texts, WEAK, 0.3)
    pw = r.predict_many(texts)[:, r.profiles.index(WEAK)]
    assert abs(float(np.mean(pw < t)) - 0.3) <= 0.02
    costs = {STRONG: 0.02, WEAK: 0.001}
    assert cost_per_1k(r, texts, costs, 0.0) == pytest.approx(1.0)  # all weak
    t2 = threshold_for_cost(r, texts, costs, 8.0)
    assert cost_per_1k(r, texts, costs, t2) <= 8.0
    assert cost_per_1k(r, texts, costs, min(1.0, t2 + 0.05)) > cost_per_1k(r, texts, costs, 0.0)


def test_calibrate_cost_weight(synth_router_file: Path, synth_file: Path) -> None:
    """cost_weight values that hit a strong share / a cost per 1k, checked through the same
    chooser the gateway uses (costs relative to the dearest model)."""
    from tierline.routing.learned.calibrate import (
        cost_per_1k_at_loss,
        cost_per_1k_at_weight,
        cost_weight_for_cost,
        cost_weight_for_strong_share,
        max_loss_for_cost,
        max_loss_for_strong_share,
    )
    from tierline.routing.learned.choose import choose
    from tierline.routing.learned.data import load_prompts

    r = LearnedRouter.load(synth_router_file)
    texts = load_prompts(synth_file)[:100]
    costs = {STRONG: 0.02, WEAK: 0.001}
    rel = {STRONG: 1.0, WEAK: 0.05}
    for share in (0.2, 0.5):
        lam = cost_weight_for_strong_share(r, texts, STRONG, WEAK, costs, share)
        got = np.mean([choose(r.predict(t), rel, lam=lam)[0] == STRONG for t in texts])
        assert abs(float(got) - share) <= 0.02
    with pytest.raises(ValueError, match="must cost more"):
        cost_weight_for_strong_share(r, texts, WEAK, STRONG, costs, 0.3)
    assert cost_per_1k_at_weight(r, texts, costs, 2.0) == pytest.approx(1.0)  # all weak
    for share in (0.2, 0.5):
        d = max_loss_for_strong_share(r, texts, STRONG, WEAK, share)
        got = np.mean([choose(r.predict(t), costs, max_loss=d)[0] == STRONG for t in texts])
        assert abs(float(got) - share) <= 0.02
    d = max_loss_for_cost(r, texts, costs, 8.0)
    assert cost_per_1k_at_loss(r, texts, costs, d) <= 8.0
    assert cost_per_1k_at_loss(r, texts, costs, max(0.0, d - 0.05)) > 8.0
    lam = cost_weight_for_cost(r, texts, costs, 8.0)
    assert cost_per_1k_at_weight(r, texts, costs, lam) <= 8.0
    assert cost_per_1k_at_weight(r, texts, costs, max(0.0, lam - 0.05)) > 8.0


def test_load_rejects_what_is_not_a_router(tmp_path: Path, synth_file: Path) -> None:
    from tierline.routing.learned.model import RouterFileError, read_profiles

    for bad, needle in [(tmp_path / "nope.npz", "does not exist"),
                        (synth_file, "is not a tierline router file"),
                        (tmp_path, "is not a file")]:
        with pytest.raises(RouterFileError, match=needle):
            LearnedRouter.load(bad)
        with pytest.raises(RouterFileError, match=needle):
            read_profiles(bad)


def test_read_profiles_matches_load(synth_router_file: Path) -> None:
    from tierline.routing.learned.model import read_profiles

    assert read_profiles(synth_router_file) == LearnedRouter.load(synth_router_file).profiles


def test_feature_config_bits_bounds() -> None:
    from tierline.routing.learned.features import FeatureConfig

    for bits in (9, 25, 31, 0, -3):
        with pytest.raises(ValueError, match=r"bits must be an integer in 10\.\.24"):
            FeatureConfig(bits=bits)
    assert FeatureConfig(bits=10).bits == 10 and FeatureConfig(bits=24).bits == 24


def test_calibrated_values_hold_as_printed(synth_router_file: Path, synth_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """What `router calibrate` prints, used as printed, meets the target: values sit in the
    middle of their step (an edge value rounded to 6 decimals crossed it), the quality share
    is counted with the gateway's own rule (strong only where P_strong > P_weak too)."""
    from tierline.cli import main
    from tierline.routing.learned.calibrate import cost_per_1k, cost_per_1k_at_loss
    from tierline.routing.learned.choose import choose
    from tierline.routing.learned.data import load_prompts

    r = LearnedRouter.load(synth_router_file)
    texts = load_prompts(synth_file)
    costs = {STRONG: 0.02, WEAK: 0.001}
    base = ["router", "calibrate", str(synth_file), "--router", str(synth_router_file),
            "--strong", STRONG, "--weak", WEAK, "--costs", f"{STRONG}=0.02,{WEAK}=0.001"]

    def calibrated(*extra: str) -> float:
        assert main([*base, *extra]) == 0
        return float(capsys.readouterr().out.strip())

    for target in (3.0, 6.0, 9.0):
        d = calibrated("--cost-per-1k", str(target))
        assert cost_per_1k_at_loss(r, texts, costs, d) <= target
        t = calibrated("--knob", "quality", "--cost-per-1k", str(target))
        assert cost_per_1k(r, texts, costs, t) <= target
    for share in (0.2, 0.4):
        t = calibrated("--knob", "quality", "--strong-share", str(share))
        got = np.mean([choose(r.predict(x), costs, quality=t)[0] == STRONG for x in texts])
        assert abs(float(got) - share) <= 0.01
