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


def test_a_pair_keeps_which_kind_of_prompt_needs_the_strong_model() -> None:
    """Trained on two sources whose strong-weak gap differs (chat 0.87, quiz ~0.2), a new
    prompt phrased like the chat file must get the larger gain: on unseen mixed traffic that
    between-kind signal is most of what generalises (bench/router_mixed_val.py).  Per-source
    intercepts averaged into the bias (the "source effects" tried and removed) flip it."""
    pytest.importorskip("sklearn")
    ex = _two_source_examples()
    probe = ["please apple river colour apple", "apple river colour apple river"]
    router = train.train_router(ex, config=FeatureConfig(bits=12), C=1.0, shared_scale=0.0,
                                knn=False)
    chat, quiz = _gains(router, probe)
    assert chat > quiz + 0.3


def test_pairwise_metric_is_pooled_over_sources() -> None:
    """The selection metric scores the pair over all the prompts together: a score that
    only tells the chat file (gap 0.87) from the quiz file routes mixed traffic well."""
    ex = _two_source_examples()
    by_file = {STRONG: np.array([1.0 if e.source == "chat" else 0.0 for e in ex]),
               WEAK: np.zeros(len(ex))}
    flat = {STRONG: np.zeros(len(ex)), WEAK: np.zeros(len(ex))}
    assert train._pairwise_apgr(ex, by_file) > 0.6
    assert train._pairwise_apgr(ex, by_file) > train._pairwise_apgr(ex, flat) + 0.1


def test_many_model_groups_keep_what_each_source_favours() -> None:
    """With three models, 'model A is the best on code prompts' is between-source
    information, and the router must keep it."""
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
    # away (bench/source_effects.py) shrinks these margins to ~0.35
    assert P[0, a] - P[0, b] > 0.6
    assert P[1, b] - P[1, a] > 0.6
