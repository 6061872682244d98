"""Calibrate the ``quality`` threshold of :func:`choose` on a sample of traffic.

With ``choose(pred, costs, quality=t)`` a prompt goes to the cheapest model whose predicted
quality reaches ``t``.  Raising ``t`` sends more traffic to expensive models.  Given a sample of
prompts we pick ``t`` so that the share of strong-model calls (two models) or the expected cost
per 1k requests (any number of models, with per-request cost estimates) matches a target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .choose import choose
from .model import LearnedRouter

__all__ = ["cost_per_1k", "threshold_for_cost", "threshold_for_strong_share"]


def threshold_for_strong_share(
    router: LearnedRouter, texts: Sequence[str], weak: str, target_share: float
) -> float:
    """Threshold ``t`` such that about ``target_share`` of prompts have P(weak) < t."""
    if not texts:
        raise ValueError("no prompts to calibrate on")
    if not 0.0 <= target_share <= 1.0:
        raise ValueError("target share must be in [0, 1]")
    pw = np.sort(router.predict_many(texts)[:, router.profiles.index(weak)])
    k = round(target_share * len(pw))
    if k <= 0:
        return float(pw[0])  # P(weak) >= t for all -> no strong call
    if k >= len(pw):
        return float(np.nextafter(pw[-1], np.inf))
    return float((pw[k - 1] + pw[k]) / 2.0)


def cost_per_1k(
    router: LearnedRouter, texts: Sequence[str], costs: dict[str, float], threshold: float
) -> float:
    """Expected cost of 1,000 requests like ``texts`` at ``threshold`` (``costs`` per request)."""
    total = 0.0
    for t in texts:
        m, _ = choose(router.predict(t), costs, quality=threshold)
        total += costs[m]
    return 1000.0 * total / max(len(texts), 1)


def threshold_for_cost(
    router: LearnedRouter,
    texts: Sequence[str],
    costs: dict[str, float],
    target_per_1k: float,
    iters: int = 30,
) -> float:
    """Largest threshold whose expected cost per 1k requests stays <= ``target_per_1k``."""
    if not texts:
        raise ValueError("no prompts to calibrate on")
    lo, hi = 0.0, 1.0
    if cost_per_1k(router, texts, costs, lo) > target_per_1k:
        return lo
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        if cost_per_1k(router, texts, costs, mid) <= target_per_1k:
            lo = mid
        else:
            hi = mid
    return lo
