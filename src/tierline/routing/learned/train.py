"""Training a :class:`LearnedRouter` from routing-outcomes data.

Needs the optional extra ``train`` (scikit-learn, which brings scipy) - training only; the
trained router runs on numpy alone.

Procedure (deterministic: lbfgs, no sampling):

1. hashed n-gram features (:mod:`.features`), IDF fitted on the training prompts;
2. models answering the same prompts form a group; per group one multi-task L2 logistic
   regression (``C``; shared + per-model weights, see :func:`_fit_group`) with soft labels (a
   prompt with score ``s`` counts as a positive with weight ``s`` and a negative with weight
   ``1 - s``).  No per-source intercepts: which *kind* of prompt needs the strong model is
   most of the signal on unseen mixed traffic (``bench/router_mixed_val.py``);
3. the stacked coefficient vectors form the frozen encoder ``E``; the base models' heads are
   the identity (see :mod:`.model`);
4. per group, optional kNN evidence (``(k, weight)`` of :data:`KNN_GRID`, ``weight = 0`` = off)
   over the static-embedding part of the features, picked by the same validation +
   leave-one-source-out criterion as the regression options (:func:`_select`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import Example
from .features import FeatureConfig, Featurizer
from .model import KnnGroup, LearnedRouter, dequantise_unit, knn_means, quantise_unit

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


def _groups(examples: Sequence[Example], models: list[str]) -> list[list[str]]:
    """Connected components of models that answered the same prompts (sorted)."""
    parent = {m: m for m in models}

    def find(m: str) -> str:
        while parent[m] != m:
            parent[m] = parent[parent[m]]
            m = parent[m]
        return m

    for e in examples:
        ms = [m for m in e.outcomes if m in parent]
        for m in ms[1:]:
            parent[find(m)] = find(ms[0])
    comps: dict[str, list[str]] = {}
    for m in models:
        comps.setdefault(find(m), []).append(m)
    return sorted(comps.values())


def _fit_group(
    X: Any,
    examples: Sequence[Example],
    group: list[str],
    C: float,
    shared_scale: float,
) -> dict[str, tuple[np.ndarray, float]]:
    """Multi-task logistic regression for the models of one group.

    Each (prompt, model) outcome is one row ``[s * phi(x), phi(x) in model m's block,
    one-hot(m)]`` ("frustratingly easy" feature augmentation): a weight vector shared by the
    group plus one per model, so that the per-model differences are regularised towards the
    shared part.  ``shared_scale = 0`` gives independent per-model regressions.  Fractional
    scores become two weighted rows (positive weight ``s``, negative ``1 - s``).
    """
    import scipy.sparse as sp  # type: ignore[import-untyped, unused-ignore]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, unused-ignore]

    if shared_scale == 0 and _is_large(X, examples, group):
        return {m: _fit_one(X, examples, m, C) for m in group}
    D = X.shape[1]
    k = len(group)
    nblocks = k + (1 if shared_scale > 0 else 0)
    parts = []
    labels: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for j, m in enumerate(group):
        rr, yy, ww, _ = _soft_rows(examples, m)
        if len(rr) == 0:
            continue
        Xr = X[rr]
        blocks = []
        if shared_scale > 0:
            blocks.append(Xr * shared_scale)
        off = D * (j + (1 if shared_scale > 0 else 0))
        spec = sp.csr_matrix((Xr.data, Xr.indices + off, Xr.indptr), shape=(len(rr), D * nblocks))
        if blocks:
            sh = blocks[0].tocsr()
            spec = spec + sp.csr_matrix((sh.data, sh.indices, sh.indptr), shape=spec.shape)
        onehot = sp.csr_matrix(
            (np.ones(len(rr)), (np.arange(len(rr)), np.full(len(rr), j))), shape=(len(rr), k)
        )
        parts.append(sp.hstack([spec, onehot]).tocsr())
        labels.append(yy)
        weights.append(ww)
    A = sp.vstack(parts).tocsr()
    y_all = np.concatenate(labels)
    w_all = np.concatenate(weights)
    out: dict[str, tuple[np.ndarray, float]] = {}
    if y_all.min() == y_all.max():  # one class only: constant predictors
        p = float(np.clip(y_all.mean(), 1e-3, 1 - 1e-3))
        return {m: (np.zeros(D, np.float32), float(np.log(p / (1 - p)))) for m in group}
    clf = LogisticRegression(C=C, max_iter=300, tol=1e-4)
    clf.fit(A, y_all, sample_weight=w_all)
    coef = clf.coef_[0]
    b = float(clf.intercept_[0])
    shared = coef[:D] * shared_scale if shared_scale > 0 else np.zeros(D)
    for j, m in enumerate(group):
        off = D * (j + (1 if shared_scale > 0 else 0))
        w = shared + coef[off : off + D]
        out[m] = (w.astype(np.float32), b + float(coef[D * nblocks + j]))
    return out


def _group_rows(examples: Sequence[Example], group: list[str]) -> np.ndarray:
    return np.array(
        [i for i, e in enumerate(examples) if any(m in e.outcomes for m in group)], np.int64
    )


#: candidate (C, shared_scale) per model group, picked on held-out parts of the train data
CANDIDATES: tuple[tuple[float, float], ...] = ((1.0, 0.0), (1.0, 0.5), (0.5, 2.0))

#: a group whose stacked (prompt, model) design matrix would hold more non-zeros than this is
#: "large": it is fitted as independent per-model regressions (one model's rows at a time),
#: and the multi-task candidates are skipped - the stacked matrix of RouterBench-sized data
#: (36k prompts x 11 models) would need > 20 GB, and sharing matters when data is scarce.
#: llmrouter's 9 models (8e7 with the shared block) stay below it.
LARGE_NNZ = 150_000_000


def _rows_of(examples: Sequence[Example], m: str) -> np.ndarray:
    return np.array([i for i, e in enumerate(examples) if m in e.outcomes], dtype=np.int64)


def _soft_rows(
    examples: Sequence[Example], m: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training rows of model ``m``: (example index per row, label, weight, scores).

    A fractional score ``s`` becomes two rows, a positive of weight ``s`` and a negative of
    weight ``1 - s``; 0 and 1 are one row of weight 1.
    """
    rows = _rows_of(examples, m)
    y = np.clip(np.array([examples[int(i)].outcomes[m].score for i in rows]), 0.0, 1.0)
    frac = (y > 0) & (y < 1)
    rr = np.concatenate([rows, rows[frac]])
    yy = np.concatenate([(y >= 0.5).astype(int), np.zeros(int(frac.sum()), int)])
    yy[: len(rows)][frac] = 1
    ww = np.concatenate([np.where(frac, y, 1.0), 1.0 - y[frac]])
    return rr, yy, ww, y


def _is_large(X: Any, examples: Sequence[Example], group: list[str]) -> bool:
    """Would the stacked multi-task matrix of ``group`` (with a shared block) be too big?"""
    row_nnz = np.diff(X.tocsr().indptr)
    total = sum(int(row_nnz[_rows_of(examples, m)].sum()) for m in group)
    return 2 * total > LARGE_NNZ


def _fit_one(X: Any, examples: Sequence[Example], m: str, C: float) -> tuple[np.ndarray, float]:
    """L2 logistic regression of one model (soft labels as two weighted rows)."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, unused-ignore]

    rr, yy, ww, y = _soft_rows(examples, m)
    if len(rr) == 0 or yy.min() == yy.max():
        p = float(np.clip(y.mean() if len(y) else 0.5, 1e-3, 1 - 1e-3))
        return np.zeros(X.shape[1], np.float32), float(np.log(p / (1 - p)))
    clf = LogisticRegression(C=C, max_iter=300, tol=1e-4)
    clf.fit(X.tocsr()[rr], yy, sample_weight=ww)
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


def _is_val(text: str) -> bool:
    """Deterministic 20% validation carve-out of the training prompts (by text hash)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % 5 == 1


def _probs(X: Any, fitted: dict[str, tuple[np.ndarray, float]]) -> dict[str, np.ndarray]:
    """P(good) of every fitted model on every row of ``X``."""
    return {m: 1 / (1 + np.exp(-(X @ w + b))) for m, (w, b) in fitted.items()}


def _pairwise_apgr(examples: Sequence[Example], P: dict[str, np.ndarray]) -> float:
    """Mean RouteLLM APGR (gain score P_a - P_b) over every model pair of the group, pooled
    over the prompts of all sources: a pair whose gap differs between kinds of prompt (math
    vs. trivia, say) is routed on that too, and on unseen mixed traffic that between-kind
    signal is most of what generalises (``bench/router_mixed_val.py``: 0.615 pooled vs. 0.513
    with it removed, and chance within any one unseen family).  Pairs with < 20 common
    prompts or a mean-quality gap < 0.02 are left out."""
    from .metrics import apgr_of

    names = sorted(P)
    vals = []
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            rows = [i for i, e in enumerate(examples) if a in e.outcomes and b in e.outcomes]
            if len(rows) < 20:
                continue
            qa = np.array([examples[i].outcomes[a].score for i in rows])
            qb = np.array([examples[i].outcomes[b].score for i in rows])
            if qa.mean() < qb.mean():
                a2, b2, qa, qb = b, a, qb, qa
            else:
                a2, b2 = a, b
            if abs(qa.mean() - qb.mean()) < 0.02:
                continue
            vals.append(apgr_of(P[a2][rows] - P[b2][rows], qa, qb))
    return float(np.mean(vals)) if vals else float("nan")


def _argmax_quality(examples: Sequence[Example], P: dict[str, np.ndarray]) -> float:
    """Mean true score of the model with the highest predicted P(good) (many-model groups),
    among the models that answered each prompt (prompts with at least two of them)."""
    names = sorted(P)
    has = np.array([[m in e.outcomes for m in names] for e in examples], bool)
    rows = np.nonzero(has.sum(axis=1) >= 2)[0]
    if len(rows) == 0:
        return float("nan")
    pred = np.stack([P[m][rows] for m in names], axis=1)
    pick = np.argmax(np.where(has[rows], pred, -np.inf), axis=1)
    q = [examples[int(i)].outcomes[names[int(j)]].score for i, j in zip(rows, pick, strict=True)]
    return float(np.mean(q))


def _group_metric(
    examples: Sequence[Example], X: Any, fitted: dict[str, tuple[np.ndarray, float]]
) -> float:
    """Two models: pairwise APGR (RouteLLM); more: quality of the predicted-best model."""
    return _prob_metric(examples, _probs(X, fitted))


def _prob_metric(examples: Sequence[Example], P: dict[str, np.ndarray]) -> float:
    """:func:`_group_metric` from predicted probabilities (one array per model)."""
    if len(P) > 2:
        return _argmax_quality(examples, P)
    return _pairwise_apgr(examples, P)


Fits = dict[str, tuple[np.ndarray, float]]


def _average(fits: Sequence[Fits]) -> Fits:
    """Average of linear models = one linear model with the mean weights and biases."""
    return {
        m: (
            np.mean([f[m][0] for f in fits], axis=0).astype(np.float32),
            float(np.mean([f[m][1] for f in fits])),
        )
        for m in fits[0]
    }


#: candidate kNN evidence per model group: (k, weight); weight 0 = off (listed first, so a
#: tie keeps the plain logistic model)
KNN_GRID: tuple[tuple[int, float], ...] = ((0, 0.0),) + tuple(
    (k, w) for k in (50, 100, 200, 400) for w in (0.15, 0.25, 0.35, 0.5)
)


def _complete_rows(examples: Sequence[Example], idx: np.ndarray, group: list[str]) -> np.ndarray:
    """Those of ``idx`` whose prompt has an outcome for every model of ``group``."""
    return np.array(
        [int(i) for i in idx if all(m in examples[int(i)].outcomes for m in group)], np.int64
    )


def _scores(examples: Sequence[Example], rows: np.ndarray, group: list[str]) -> np.ndarray:
    return np.array(
        [[examples[int(i)].outcomes[m].score for m in group] for i in rows], np.float32
    ).reshape(len(rows), len(group))


def _knn_table(
    S: np.ndarray,
    examples: Sequence[Example],
    tr_idx: np.ndarray,
    ev_idx: np.ndarray,
    group: list[str],
    ks: Sequence[int],
) -> dict[int, np.ndarray]:
    """Per k: kNN mean scores (len(ev_idx), len(group)) from the complete rows of ``tr_idx``."""
    rows = _complete_rows(examples, tr_idx, group)
    V = dequantise_unit(S[rows])
    Y = _scores(examples, rows, group)
    Q = dequantise_unit(S[ev_idx])
    out: dict[int, np.ndarray] = {}
    for k in ks:
        parts = [knn_means(V, Y, Q[s : s + 512].T, k) for s in range(0, len(Q), 512)]
        out[k] = np.concatenate(parts) if parts else np.zeros((0, len(group)), np.float32)
    return out


def _select(
    X: Any,
    examples: Sequence[Example],
    texts: Sequence[str],
    group: list[str],
    cands: Sequence[tuple[float, float]],
    log: Any,
    S: np.ndarray | None = None,
) -> tuple[list[tuple[float, float]], tuple[int, float]]:
    """Pick the candidate(s) for one group; a list of several means "average them".

    Options: each ``(C, shared_scale)`` of ``cands`` alone, and the average of all of them.
    Score: :func:`_group_metric` on the validation carve-out of the training data; when the
    group's prompts come from several sources, averaged with the leave-one-source-out metric
    (fit on the other sources, score on the held-out one) - the router is meant for unseen
    prompt distributions, so generalisation across sources counts as much as in-domain fit.
    Then, with the chosen option's fits, the ``(k, weight)`` of :data:`KNN_GRID` by the same
    score (``S``: int8 static-embedding vectors of all prompts; ``None``: no kNN).
    """
    in_group = np.array([any(m in e.outcomes for m in group) for e in examples])
    val = np.array([_is_val(t) for t in texts]) & in_group
    splits = [(np.nonzero(~val & in_group)[0], np.nonzero(val)[0])]
    sources = sorted({examples[int(i)].source for i in np.nonzero(in_group)[0]})
    if len(sources) > 1:
        src = np.array([e.source for e in examples])
        for held in sources:
            splits.append(
                (np.nonzero(in_group & (src != held))[0], np.nonzero(in_group & (src == held))[0])
            )
    options: list[list[tuple[float, float]]] = [[c] for c in cands]
    if len(cands) > 1:
        options.append(list(cands))
    per_split: list[list[float]] = []
    split_fits: list[list[Fits]] = []
    for tr_idx, ev_idx in splits:
        tr_ex = [examples[int(i)] for i in tr_idx]
        ev_ex = [examples[int(i)] for i in ev_idx]
        fits = [_fit_group(X[tr_idx], tr_ex, group, c, sc) for c, sc in cands]
        if len(cands) > 1:
            fits.append(_average(fits))
        split_fits.append(fits)
        per_split.append([_group_metric(ev_ex, X[ev_idx], f) for f in fits])
    res = np.array(per_split)
    scores = res[0] if len(res) == 1 else (res[0] + res[1:].mean(axis=0)) / 2.0
    for opt, row, sc_ in zip(options, res.T, scores, strict=True):
        if log is not None:
            name = "average of all" if len(opt) > 1 else f"C={opt[0][0]} shared_scale={opt[0][1]}"
            log(
                f"  {name}: validation {row[0]:.4f}, LOSO {np.round(row[1:], 4).tolist()}, "
                f"score {sc_:.4f}"
            )
    if np.isnan(scores).all():  # no prompt to score on (e.g. too sparse): the first option
        if log is not None:
            log("  no validation metric could be computed: first option, no kNN")
        return options[0], (0, 0.0)
    best = int(np.nanargmax(scores))
    # kNN needs prompts answered by every model of the group: k up to half of them
    n_complete = min(len(_complete_rows(examples, tr_idx, group)) for tr_idx, _ in splits)
    grid = [(k, w) for k, w in KNN_GRID if w <= 0 or 2 * k <= n_complete]
    ks = sorted({k for k, w in grid if w > 0})
    if S is None or not ks:
        return options[best], (0, 0.0)
    kres: list[list[float]] = []
    for (tr_idx, ev_idx), fits in zip(splits, split_fits, strict=True):
        ev_ex = [examples[int(i)] for i in ev_idx]
        P = _probs(X[ev_idx], fits[best])
        table = _knn_table(S, examples, tr_idx, ev_idx, group, ks)
        row_ = []
        for k, w in grid:
            if w <= 0:
                row_.append(_prob_metric(ev_ex, P))
                continue
            row_.append(
                _prob_metric(
                    ev_ex,
                    {m: (1 - w) * P[m] + w * table[k][:, j] for j, m in enumerate(group)},
                )
            )
        kres.append(row_)
    kr = np.array(kres)
    kscores = kr[0] if len(kr) == 1 else (kr[0] + kr[1:].mean(axis=0)) / 2.0
    if log is not None:
        for (k, w), row, sc_ in zip(grid, kr.T, kscores, strict=True):
            log(
                f"  kNN k={k} weight={w}: validation {row[0]:.4f}, "
                f"LOSO {np.round(row[1:], 4).tolist()}, score {sc_:.4f}"
            )
    return options[best], grid[int(np.nanargmax(kscores))]


def _check_hyper(C: float | None, shared_scale: float | None) -> None:
    """``C`` finite and > 0, ``shared_scale`` finite and >= 0 (or ``None``: validated)."""
    if C is not None and not (math.isfinite(C) and C > 0):
        raise ValueError(f"C must be a finite number > 0 (got {C})")
    if shared_scale is not None and not (math.isfinite(shared_scale) and shared_scale >= 0):
        raise ValueError(f"shared_scale must be a finite number >= 0 (got {shared_scale})")


def train_router(
    examples: Sequence[Example],
    *,
    config: FeatureConfig | None = None,
    C: float | None = None,
    shared_scale: float | None = None,
    min_examples: int = 20,
    knn: bool = True,
    log: Any = None,
) -> LearnedRouter:
    """Train a router on ``examples`` (already filtered by split / flags).

    With ``C`` and ``shared_scale`` both ``None`` each model group picks one
    ``(C, shared_scale)`` of :data:`CANDIDATES` or their average by :func:`_select`
    (validation carve-out of ``examples`` + leave-one-source-out), then is refitted on all;
    with ``knn`` (and static-embedding features) it also picks its kNN ``(k, weight)`` there.
    """
    _check_hyper(C, shared_scale)
    if not examples:
        raise ValueError("no training examples")
    feat = Featurizer(config or FeatureConfig())
    texts = [e.text for e in examples]
    feat.fit_idf(texts)
    X = build_matrix(feat, texts)
    counts: dict[str, int] = {}
    for e in examples:
        for m in e.outcomes:
            counts[m] = counts.get(m, 0) + 1
    kept = sorted(m for m, c in counts.items() if c >= min_examples)
    if not kept:
        raise ValueError(f"no model has >= {min_examples} training outcomes")
    fitted: dict[str, tuple[np.ndarray, float]] = {}
    chosen: dict[str, list[list[float]]] = {}
    knn_groups: list[KnnGroup] = []
    S = None
    if knn and feat.config.static_dims:
        S = quantise_unit(X[:, feat.hash_dim :].toarray())
    for group in _groups(examples, kept):
        chosen_opts = [
            (C if C is not None else 0.5, shared_scale if shared_scale is not None else 2.0)
        ]
        k_w = (0, 0.0)
        if len(group) > 1 and C is None and shared_scale is None:
            cands = CANDIDATES
            if _is_large(X, examples, group):
                cands = ((1.0, 0.0),)
                if log is not None:
                    log(f"  large group ({len(group)} models): independent regressions only")
            chosen_opts, k_w = _select(X, examples, texts, group, cands, log, S)
        fitted.update(_average([_fit_group(X, examples, group, c, sc) for c, sc in chosen_opts]))
        for m in group:
            chosen[m] = [list(o) for o in chosen_opts]
        if S is not None and k_w[1] > 0:
            rows = _complete_rows(examples, np.arange(len(examples)), group)
            knn_groups.append(
                KnnGroup(list(group), k_w[0], k_w[1], S[rows], _scores(examples, rows, group))
            )
        if log is not None:
            log(
                f"trained (C, shared_scale) {chosen_opts}, kNN (k, weight) {k_w}: "
                + ", ".join(f"{m} (n={counts[m]})" for m in group)
            )
    enc = np.stack([fitted[m][0] for m in kept], axis=1)
    bias = np.array([fitted[m][1] for m in kept], np.float32)
    meta: dict[str, object] = {
        "C_shared_scale": chosen,
        "n_train": len(examples),
        "sources": sorted({e.source for e in examples}),
    }
    return LearnedRouter(feat, enc, bias, kept, meta=meta, knn=knn_groups)
