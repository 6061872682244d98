from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tierline.routing.learned import train
from tierline.routing.learned.data import load_outcomes
from tierline.routing.learned.evaluate import two_model_eval
from tierline.routing.learned.features import FeatureConfig

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
