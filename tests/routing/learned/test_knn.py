"""kNN evidence of the learned router: maths, persistence, training switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tierline.routing.learned.data import load_outcomes
from tierline.routing.learned.model import (
    KnnGroup,
    LearnedRouter,
    dequantise_unit,
    knn_means,
    quantise_unit,
)

from .conftest import STRONG, WEAK


def test_knn_means_picks_nearest() -> None:
    V = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    Y = np.array([[1.0], [0.0], [0.25], [0.75]], np.float32)
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32).T  # columns = queries
    out = knn_means(V, Y, q, 2)
    np.testing.assert_allclose(out[:, 0], [0.5, 0.5])
    out1 = knn_means(V, Y, q, 1)
    np.testing.assert_allclose(out1[:, 0], [1.0, 0.25])
    # k >= n: the mean of all rows
    np.testing.assert_allclose(knn_means(V, Y, q, 10)[:, 0], [0.5, 0.5])


def test_quantise_round_trip() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 64))
    q = quantise_unit(v)
    assert q.dtype == np.int8
    back = dequantise_unit(q)
    cos = np.sum(back * (v / np.linalg.norm(v, axis=1, keepdims=True)), axis=1)
    assert np.all(cos > 0.999)
    assert np.all(dequantise_unit(np.zeros((1, 4), np.int8)) == 0)


def _with_knn(base: LearnedRouter, weight: float, k: int, texts: list[str],
              scores: np.ndarray) -> LearnedRouter:
    vecs = []
    for t in texts:
        idx, val = base.featurizer.transform(t)
        s = base._static(idx, val)
        assert s is not None
        vecs.append(s)
    g = KnnGroup([STRONG, WEAK], k, weight, quantise_unit(np.stack(vecs)),
                 scores.astype(np.float32))
    return LearnedRouter(base.featurizer, base.encoder, base.encoder_bias, base.base_models,
                         meta=base.meta, knn=[g])


def test_knn_blend_and_persistence(synth_router_file: Path, synth_file: Path,
                                   tmp_path: Path) -> None:
    r_ = LearnedRouter.load(synth_router_file)
    base = LearnedRouter(r_.featurizer, r_.encoder, r_.encoder_bias, r_.base_models)
    ex = load_outcomes(synth_file, split="train")
    texts = [e.text for e in ex]
    # neighbours all say: strong always right, weak always wrong
    scores = np.tile(np.array([[1.0, 0.0]]), (len(texts), 1))
    r = _with_knn(base, 0.4, 5, texts, scores)
    probe = ["apple river colour apple", "integral prime matrix compute 17 * 23"]
    lin = base.predict_many(probe)
    cols = [r.profiles.index(STRONG), r.profiles.index(WEAK)]
    got = r.predict_many(probe)[:, cols]
    np.testing.assert_allclose(got[:, 0], 0.6 * lin[:, cols[0]] + 0.4, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], 0.6 * lin[:, cols[1]], atol=1e-6)
    one = r.predict(probe[0])
    assert one[STRONG] == pytest.approx(got[0, 0]) and one[WEAK] == pytest.approx(got[0, 1])
    r.save(tmp_path / "knn.npz")
    r2 = LearnedRouter.load(tmp_path / "knn.npz")
    assert len(r2.knn) == 1 and r2.knn[0].k == 5 and r2.knn[0].weight == pytest.approx(0.4)
    np.testing.assert_allclose(r2.predict_many(probe), r.predict_many(probe), atol=1e-6)
    # weight 0: exactly the linear model
    r0 = _with_knn(base, 0.0, 5, texts, scores)
    np.testing.assert_allclose(r0.predict_many(probe), lin, atol=1e-7)
    # added profiles use the linear part only
    r.add_profile("new-model", texts, [e.score(WEAK) for e in ex])
    base.add_profile("new-model", texts, [e.score(WEAK) for e in ex])
    np.testing.assert_allclose(r.predict_many(probe)[:, -1], base.predict_many(probe)[:, -1],
                               atol=1e-6)


def test_knn_group_validation(synth_router_file: Path) -> None:
    r = LearnedRouter.load(synth_router_file)
    d = r.featurizer.config.static_dims
    bad = KnnGroup([STRONG, "nope"], 3, 0.2, np.zeros((4, d), np.int8),
                   np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError):
        LearnedRouter(r.featurizer, r.encoder, r.encoder_bias, r.base_models, knn=[bad])
    bad_dims = KnnGroup([STRONG, WEAK], 3, 0.2, np.zeros((4, d + 1), np.int8),
                        np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError):
        LearnedRouter(r.featurizer, r.encoder, r.encoder_bias, r.base_models, knn=[bad_dims])


def test_train_knn_switch(synth_file: Path) -> None:
    pytest.importorskip("sklearn")
    from tierline.routing.learned.features import FeatureConfig
    from tierline.routing.learned.train import KNN_GRID, train_router

    assert KNN_GRID[0] == (0, 0.0)  # "off" is a candidate, and wins ties
    ex = load_outcomes(synth_file, split="train")
    off = train_router(ex, config=FeatureConfig(bits=12), knn=False)
    assert off.knn == []
    logs: list[str] = []
    on = train_router(ex, config=FeatureConfig(bits=12), log=logs.append)
    assert any("kNN k=100 weight=0.25" in line for line in logs)
    for g in on.knn:
        assert g.weight > 0 and sorted(g.models) == sorted([STRONG, WEAK])
        assert len(g.vecs) == len(ex)
