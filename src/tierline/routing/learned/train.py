"""Training a :class:`LearnedRouter` from routing-outcomes data.

Needs the optional extra ``train`` (scikit-learn, which brings scipy) - training only; the
trained router runs on numpy alone.

Procedure (deterministic: lbfgs, no sampling):

1. hashed n-gram features (:mod:`.features`), IDF fitted on the training prompts;
2. for every model with outcomes, an L2 logistic regression (``C``) on those features with
   soft labels (a prompt with score ``s`` counts as a positive with weight ``s`` and a negative
   with weight ``1 - s``), over the prompts that model answered;
3. the stacked coefficient vectors form the frozen encoder ``E``; the base models' heads are
   the identity (see :mod:`.model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import Example
from .features import FeatureConfig, Featurizer
from .model import LearnedRouter

__all__ = ["build_matrix", "train_router"]


def build_matrix(feat: Featurizer, texts: Sequence[str]) -> Any:
    """CSR matrix (scipy) of the featurised ``texts``."""
    import scipy.sparse as sp  # type: ignore[import-untyped, unused-ignore]

    indptr = [0]
    idx_parts = []
    val_parts = []
    for t in texts:
        i, v = feat.transform(t)
        idx_parts.append(i)
        val_parts.append(v)
        indptr.append(indptr[-1] + len(i))
    return sp.csr_matrix(
        (
            np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32),
            np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64),
            np.array(indptr),
        ),
        shape=(len(texts), feat.dim),
    )


def _fit_soft_lr(X: Any, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    import scipy.sparse as sp  # type: ignore[import-untyped, unused-ignore]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, unused-ignore]

    y = np.clip(y, 0.0, 1.0)
    clf = LogisticRegression(C=C, max_iter=200, tol=1e-4)
    frac = (y > 0) & (y < 1)
    if not frac.any():
        if 0 < y.sum() < len(y):
            clf.fit(X, y.astype(int))
        else:  # a single class: constant predictor
            p = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
            return np.zeros(X.shape[1], np.float32), float(np.log(p / (1 - p)))
    else:
        # fractional scores: duplicated rows, positive with weight s, negative with 1 - s
        hard = ~frac
        fr = np.nonzero(frac)[0]
        X2 = sp.vstack([X[np.nonzero(hard)[0]], X[fr], X[fr]]).tocsr()
        y2 = np.concatenate([y[hard].astype(int), np.ones(len(fr), int), np.zeros(len(fr), int)])
        w2 = np.concatenate([np.ones(int(hard.sum())), y[fr], 1.0 - y[fr]])
        clf.fit(X2, y2, sample_weight=w2)
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


def train_router(
    examples: Sequence[Example],
    *,
    config: FeatureConfig | None = None,
    C: float = 1.0,
    min_examples: int = 20,
    log: Any = None,
) -> LearnedRouter:
    """Train a router on ``examples`` (already filtered by split / flags)."""
    if not examples:
        raise ValueError("no training examples")
    feat = Featurizer(config or FeatureConfig())
    texts = [e.text for e in examples]
    feat.fit_idf(texts)
    X = build_matrix(feat, texts)
    models = sorted({m for e in examples for m in e.outcomes})
    cols: list[np.ndarray] = []
    biases: list[float] = []
    kept: list[str] = []
    for m in models:
        rows = np.array([i for i, e in enumerate(examples) if m in e.outcomes])
        if len(rows) < min_examples:
            continue
        y = np.array([examples[i].outcomes[m].score for i in rows])
        w, b = _fit_soft_lr(X[rows], y, C)
        cols.append(w)
        biases.append(b)
        kept.append(m)
        if log is not None:
            log(f"trained {m}: n={len(rows)} mean={y.mean():.3f}")
    if not kept:
        raise ValueError(f"no model has >= {min_examples} training outcomes")
    enc = np.stack(cols, axis=1)
    meta: dict[str, object] = {
        "C": C,
        "n_train": len(examples),
        "sources": sorted({e.source for e in examples}),
    }
    return LearnedRouter(feat, enc, np.array(biases, np.float32), kept, meta=meta)
