from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from tierline.routing.learned import train
from tierline.routing.learned.data import Example, Outcome, load_outcomes
from tierline.routing.learned.evaluate import two_model_eval
from tierline.routing.learned.features import FeatureConfig
from tierline.routing.learned.model import LearnedRouter

from .conftest import STRONG, WEAK


def test_large_group_fits_independent_regressions(synth_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Past LARGE_NNZ a group is fitted model by model (no stacked multi-task matrix), the
    multi-task candidates are skipped, and the result equals independent regressions."""
    pytest.importorskip("sklearn")
    ex = load_outcomes(synth_file, split="train")
    test = load_outcomes(synth_file, split="test")
    cfg = FeatureConfig(bits=12)
    small = train.train_router(ex, config=cfg, C=1.0, shared_scale=0.0, knn=False)
    monkeypatch.setattr(train, "LARGE_NNZ", 1)
    logs: list[str] = []
    big = train.train_router(ex, config=cfg, knn=False, log=logs.append)
    assert any("large group" in x for x in logs)
    assert big.meta["C_shared_scale"] == {STRONG: [[1.0, 0.0]], WEAK: [[1.0, 0.0]]}
    texts = [e.text for e in test]
    # same model up to the solver: the stacked fit shares one intercept, the split fits not
    p_small, p_big = small.predict_many(texts), big.predict_many(texts)
    assert np.corrcoef(p_small[:, 0], p_big[:, 0])[0, 1] > 0.98
    res = two_model_eval(big, test, STRONG, WEAK, {})
    assert res["apgr"] > 0.6


def _two_source_examples() -> list[Example]:
    """'chat' prompts all say 'please' and have a large strong-weak gap everywhere; in 'quiz'
    the gap is large only for hard ('integral ...') prompts."""
    rng = random.Random(1)
    out = []
    for i in range(600):
        chat = i % 2 == 0
        hard = not chat and i % 4 == 1
        words = ["integral", "matrix", "prime"] if hard else ["apple", "colour", "river"]
        text = ("please " if chat else "") + " ".join(rng.choice(words) for _ in range(6))
        ps, pw = (0.97, 0.1) if chat else ((0.7, 0.3) if hard else (0.9, 0.88))
        out.append(
            Example(
                id=f"{i}",
                text=f"{text} {i}",
                outcomes={
                    STRONG: Outcome(float(rng.random() < ps)),
                    WEAK: Outcome(float(rng.random() < pw)),
                },
                split="train",
                source="chat" if chat else "quiz",
            )
        )
    return out


def _gains(router: LearnedRouter, texts: list[str]) -> np.ndarray:
    P = router.predict_many(texts)
    i, j = router.profiles.index(STRONG), router.profiles.index(WEAK)
    gain: np.ndarray = P[:, i] - P[:, j]
    return gain


def test_source_effects_keep_file_identity_out_of_the_text_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trained on two sources, the router must not learn 'looks like the chat file -> the
    chat file's gap': a new hard prompt needs the strong model more than a new easy prompt
    phrased like the chat file.  Without the per-source intercepts the order flips."""
    pytest.importorskip("sklearn")
    ex = _two_source_examples()
    probe = ["please apple river colour apple", "integral prime matrix integral prime"]
    cfg = FeatureConfig(bits=12)
    router = train.train_router(ex, config=cfg, C=1.0, shared_scale=0.0, knn=False)
    easy_chat, hard = _gains(router, probe)
    assert hard > easy_chat + 0.1
    monkeypatch.setattr(train, "_fit", train._fit_group)  # no source effects
    plain = train.train_router(ex, config=cfg, C=1.0, shared_scale=0.0, knn=False)
    easy_chat0, hard0 = _gains(plain, probe)
    assert easy_chat0 > hard0


def test_pairwise_metric_is_per_source() -> None:
    """A score that only tells the two files apart routes no better than chance inside
    either file: the selection metric must not reward it."""
    ex = _two_source_examples()
    by_file = {STRONG: np.array([1.0 if e.source == "chat" else 0.0 for e in ex]),
               WEAK: np.zeros(len(ex))}
    within = {STRONG: np.array([1.0 if "integral" in e.text else 0.0 for e in ex]),
              WEAK: np.zeros(len(ex))}
    assert train._pairwise_apgr(ex, within) > train._pairwise_apgr(ex, by_file) + 0.1


def test_pairwise_metric_with_only_tiny_sources_pools_them() -> None:
    """Sources of < 20 prompts each cannot be scored alone: the metric pools them rather
    than giving up (which would leave model selection without a criterion)."""
    ex = [
        Example(id=e.id, text=e.text, outcomes=e.outcomes, split="train", source=f"s{i // 10}")
        for i, e in enumerate(_two_source_examples())
    ]
    within = {STRONG: np.array([1.0 if "integral" in e.text else 0.0 for e in ex]),
              WEAK: np.zeros(len(ex))}
    assert train._pairwise_apgr(ex, within) == pytest.approx(
        train._pairwise_apgr([Example(id=e.id, text=e.text, outcomes=e.outcomes) for e in ex],
                             within)
    )
    assert np.isfinite(train._pairwise_apgr(ex, within))


def test_many_model_groups_keep_what_each_source_favours() -> None:
    """With three models, 'model A is the best on code prompts' is between-source
    information, and the router must keep it (source effects are for pairs only)."""
    pytest.importorskip("sklearn")
    rng = random.Random(2)
    p_good = {"code": {"a": 0.9, "b": 0.2, "c": 0.5}, "chat": {"a": 0.2, "b": 0.9, "c": 0.5}}
    words = {"code": ["def", "loop", "return", "class"], "chat": ["story", "river", "friend"]}
    ex = [
        Example(
            id=str(i),
            text=" ".join(rng.choice(words[src]) for _ in range(6)) + f" {i}",
            outcomes={m: Outcome(float(rng.random() < p)) for m, p in p_good[src].items()},
            split="train",
            source=src,
        )
        for i in range(400)
        for src in ("code", "chat")[i % 2 : i % 2 + 1]
    ]
    r = train.train_router(ex, config=FeatureConfig(bits=12), C=1.0, shared_scale=0.0, knn=False)
    P = r.predict_many(["def loop return class def", "story river friend story"])
    a, b = r.profiles.index("a"), r.profiles.index("b")
    # trained as 0.9 vs 0.2 on code and the reverse on chat; averaging the per-source levels
    # away (source effects) shrinks these margins to ~0.35
    assert P[0, a] - P[0, b] > 0.6
    assert P[1, b] - P[1, a] > 0.6


def test_knn_outcomes_of_a_pair_are_centred_per_source() -> None:
    """The neighbours' outcomes must not carry their file's strong-weak gap (the chat file's
    is 0.87, the quiz file's ~0.2): per source, the kept means equal the overall means."""
    ex = _two_source_examples()
    rows = np.arange(len(ex))
    raw = train._scores(ex, rows, [STRONG, WEAK])
    kept = train._knn_scores(ex, rows, [STRONG, WEAK])
    src = np.array([e.source for e in ex])
    for s in ("chat", "quiz"):
        assert kept[src == s].mean(axis=0) == pytest.approx(raw.mean(axis=0), abs=1e-5)
    # within a source only a constant moves: the ranking of neighbours' outcomes is kept
    d = kept - raw
    assert np.ptp(d[src == "chat"], axis=0) == pytest.approx(0.0, abs=1e-6)
    # one source: untouched
    one = [e for e in ex if e.source == "quiz"]
    assert np.array_equal(train._knn_scores(one, np.arange(len(one)), [STRONG, WEAK]),
                          train._scores(one, np.arange(len(one)), [STRONG, WEAK]))
