"""Router evaluation metrics (RouteLLM two-model metrics, RouterBench AIQ).

Two models (RouteLLM, ``routellm/evals/evaluate.py`` + ``benchmarks.py``): the router gives each
prompt a score (higher = more need for the strong model).  Thresholds are the quantiles of the
scores at ``num_results`` equal-sized bins (``pandas.qcut`` edges, ``num_results + 1`` of them);
prompts with score ``>= t`` go to the strong model (``> t`` for the last, largest edge, so that
point has 0 strong calls).  Each threshold gives a point (strong-call %, mean quality).

* ``APGR`` = (AUC_router - AUC_weak) / (AUC_strong - AUC_weak), AUCs taken with the trapezoid
  rule over the strong-call share axis (in [0, 1]) of the router's points, the weak / strong
  "curves" being constant at the weak / strong model's mean quality.
* ``CPT(x%)`` = strong-call % needed to reach weak + x * (strong - weak) quality, by linear
  interpolation of the points as RouteLLM does (``np.interp`` over the points sorted by
  strong-call share).

Many models (RouterBench, Hu et al. 2024): ``AIQ`` = 1 / (c_max - c_min) * integral over
[c_min, c_max] of the non-decreasing upper convex hull of the router's (cost, quality) points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Arr = npt.NDArray[np.float64]

__all__ = [
    "aiq",
    "apgr",
    "apgr_of",
    "cpt",
    "nondecreasing_hull",
    "routellm_curve",
    "share_at_quality",
]


def _trapz(y: Arr, x: Arr) -> float:
    if len(x) < 2:
        return 0.0
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def routellm_curve(
    scores: Sequence[float] | Arr,
    strong_q: Sequence[float] | Arr,
    weak_q: Sequence[float] | Arr,
    num_results: int = 10,
    weights: Sequence[float] | Arr | None = None,
) -> tuple[Arr, Arr, Arr]:
    """RouteLLM threshold sweep: (thresholds, strong-call share in [0,1], mean quality).

    ``weights`` (default 1) weight each prompt in both the share and the quality (RouteLLM's
    MT-Bench counts each of the 2 turns as a call, which is the same for every prompt).
    """
    s = np.asarray(scores, dtype=np.float64)
    qs = np.asarray(strong_q, dtype=np.float64)
    qw = np.asarray(weak_q, dtype=np.float64)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    thresholds = np.quantile(s, np.linspace(0.0, 1.0, num_results + 1))
    shares = np.empty(len(thresholds))
    quals = np.empty(len(thresholds))
    for i, t in enumerate(thresholds):
        sel = s >= t if i != len(thresholds) - 1 else s > t
        shares[i] = float(np.sum(w * sel) / np.sum(w))
        quals[i] = float(np.sum(w * np.where(sel, qs, qw)) / np.sum(w))
    order = np.argsort(shares, kind="stable")
    return thresholds[order], shares[order], quals[order]


def apgr(shares: Arr, quals: Arr, strong_mean: float, weak_mean: float) -> float:
    """Average performance gap recovered (RouteLLM); points sorted by share."""
    auc = _trapz(quals, shares)
    width = float(shares[-1] - shares[0]) if len(shares) else 0.0
    gap = (strong_mean - weak_mean) * width
    if gap == 0:
        return float("nan")
    return (auc - weak_mean * width) / gap


def apgr_of(
    scores: Sequence[float] | Arr, strong_q: Sequence[float] | Arr, weak_q: Sequence[float] | Arr
) -> float:
    """APGR of routing by ``scores`` (higher -> strong), on RouteLLM's 10-quantile curve."""
    _, shares, quals = routellm_curve(scores, strong_q, weak_q)
    return apgr(shares, quals, float(np.mean(strong_q)), float(np.mean(weak_q)))


def cpt(shares: Arr, quals: Arr, strong_mean: float, weak_mean: float, pct: float) -> float:
    """Call-performance threshold: strong-call share (0..1) to reach ``pct`` of the gap."""
    target = pct * (strong_mean - weak_mean) + weak_mean
    return float(np.interp(target, quals, shares))


def share_at_quality(
    scores: Sequence[float] | Arr,
    strong_q: Sequence[float] | Arr,
    weak_q: Sequence[float] | Arr,
    target: float,
) -> tuple[float, Arr]:
    """Smallest strong-call share whose routed mean quality reaches ``target``.

    Sweeps every possible cut (prompts sorted by score, top-k to strong).  Returns the share
    and the boolean mask of prompts sent to the strong model at that point (all prompts to
    strong if never reached).
    """
    s = np.asarray(scores, dtype=np.float64)
    qs = np.asarray(strong_q, dtype=np.float64)
    qw = np.asarray(weak_q, dtype=np.float64)
    n = len(s)
    order = np.argsort(-s, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum((qs - qw)[order])])
    quality = (qw.sum() + gain) / n
    ok = np.nonzero(quality >= target - 1e-12)[0]
    k = int(ok[0]) if len(ok) else n
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return k / n, mask


def nondecreasing_hull(costs: Sequence[float] | Arr, quals: Sequence[float] | Arr) -> Arr:
    """Upper convex hull of (cost, quality) points, made non-decreasing; shape (m, 2)."""
    pts = sorted(zip(np.asarray(costs, float), np.asarray(quals, float), strict=True))
    hull: list[tuple[float, float]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()  # hull[-1] lies on or below the chord hull[-2] -> p
            else:
                break
        if hull and hull[-1][0] == p[0]:
            if p[1] >= hull[-1][1]:
                hull[-1] = p
            continue
        hull.append(p)
    # keep only the rising part: after the best quality the curve stays flat
    best = int(np.argmax([y for _, y in hull]))
    return np.array(hull[: best + 1], dtype=np.float64)


def aiq(
    costs: Sequence[float] | Arr,
    quals: Sequence[float] | Arr,
    c_min: float,
    c_max: float,
) -> float:
    """RouterBench AIQ over [c_min, c_max]: mean of the non-decreasing hull.

    Below the router's cheapest point the hull is 0 (no cheaper operating point exists);
    above its best point the quality stays at that best value.
    """
    h = nondecreasing_hull(costs, quals)
    if c_max <= c_min:
        return float(h[-1, 1])
    grid = np.linspace(c_min, c_max, 2001)
    y = np.interp(grid, h[:, 0], h[:, 1], left=0.0, right=float(h[-1, 1]))
    y[grid < h[0, 0]] = 0.0
    return _trapz(y, grid) / (c_max - c_min)
