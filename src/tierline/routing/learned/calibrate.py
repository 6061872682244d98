"""Calibrate the learned strategy's knob on a sample of traffic.

* ``quality`` (``choose(pred, costs, quality=t)``): a prompt goes to the cheapest model whose
  predicted quality reaches ``t``; raising ``t`` sends more traffic to expensive models.
* ``max_loss`` (the gateway's default knob, ``choose(pred, costs, max_loss=d)``): a prompt
  goes to the cheapest model predicted within ``d`` of the best one; with two models the
  strong one iff its predicted gain exceeds ``d``; lowering ``d`` sends more traffic to
  expensive models.
* ``cost_weight`` ( ``choose(pred, costs / max(costs), lam=l)``):
  a prompt goes to the model maximising P(good) - l * cost / max_cost; with two models the
  strong one iff its predicted gain exceeds ``l * (1 - c_weak / c_strong)``; lowering ``l``
  sends more traffic to expensive models.

Given a sample of prompts we pick the value so that the share of strong-model calls (two
models) or the expected cost per 1k requests (any number of models, with per-request cost
estimates) matches a target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .choose import choose
from .model import LearnedRouter

__all__ = [
    "cost_per_1k",
    "cost_per_1k_at_loss",
    "cost_per_1k_at_weight",
    "cost_weight_for_cost",
    "cost_weight_for_strong_share",
    "max_loss_for_cost",
    "max_loss_for_strong_share",
    "threshold_for_cost",
    "threshold_for_strong_share",
]


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


def _relative(costs: dict[str, float]) -> dict[str, float]:
    top = max(costs.values(), default=0.0) or 1.0
    return {m: c / top for m, c in costs.items()}


def _gain_threshold(
    router: LearnedRouter, texts: Sequence[str], strong: str, weak: str, target_share: float
) -> float:
    """Predicted gain P(strong) - P(weak) above which ``target_share`` of prompts lie."""
    if not texts:
        raise ValueError("no prompts to calibrate on")
    if not 0.0 <= target_share <= 1.0:
        raise ValueError("target share must be in [0, 1]")
    P = router.predict_many(texts)
    gain = np.sort(P[:, router.profiles.index(strong)] - P[:, router.profiles.index(weak)])
    k = len(gain) - round(target_share * len(gain))  # prompts that stay on the weak model
    if k <= 0:
        return float(gain[0]) - 1e-6
    if k >= len(gain):
        return float(gain[-1])
    return float((gain[k - 1] + gain[k]) / 2.0)


def max_loss_for_strong_share(
    router: LearnedRouter, texts: Sequence[str], strong: str, weak: str, target_share: float
) -> float:
    """``max_loss`` such that about ``target_share`` of prompts go to ``strong`` (strong iff
    its predicted gain over ``weak`` exceeds ``max_loss``)."""
    return min(1.0, max(0.0, _gain_threshold(router, texts, strong, weak, target_share)))


def cost_weight_for_strong_share(
    router: LearnedRouter,
    texts: Sequence[str],
    strong: str,
    weak: str,
    costs: dict[str, float],
    target_share: float,
) -> float:
    """``cost_weight`` such that about ``target_share`` of prompts go to ``strong``: the
    predicted gain at that quantile over ``1 - c_weak / c_strong``."""
    missing = [m for m in (strong, weak) if m not in costs]
    if missing:
        raise ValueError(f"no cost given for {', '.join(missing)} (--costs model=USD,...)")
    if costs[strong] <= costs[weak]:
        raise ValueError(f"{strong} must cost more per request than {weak}")
    g = _gain_threshold(router, texts, strong, weak, target_share)
    return max(0.0, g / (1.0 - costs[weak] / costs[strong]))


def cost_per_1k_at_loss(
    router: LearnedRouter, texts: Sequence[str], costs: dict[str, float], max_loss: float
) -> float:
    """Expected cost of 1,000 requests like ``texts`` at ``max_loss``."""
    total = sum(costs[choose(router.predict(t), costs, max_loss=max_loss)[0]] for t in texts)
    return 1000.0 * total / max(len(texts), 1)


def max_loss_for_cost(
    router: LearnedRouter,
    texts: Sequence[str],
    costs: dict[str, float],
    target_per_1k: float,
    iters: int = 30,
) -> float:
    """Smallest ``max_loss`` whose expected cost per 1k requests stays <= the target."""
    if not texts:
        raise ValueError("no prompts to calibrate on")
    lo, hi = 0.0, 1.0  # at 1 every candidate qualifies: the cheapest
    if cost_per_1k_at_loss(router, texts, costs, lo) <= target_per_1k:
        return lo
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        if cost_per_1k_at_loss(router, texts, costs, mid) <= target_per_1k:
            hi = mid
        else:
            lo = mid
    return hi


def cost_per_1k_at_weight(
    router: LearnedRouter, texts: Sequence[str], costs: dict[str, float], lam: float
) -> float:
    """Expected cost of 1,000 requests like ``texts`` at ``cost_weight = lam``."""
    rel = _relative(costs)
    total = sum(costs[choose(router.predict(t), rel, lam=lam)[0]] for t in texts)
    return 1000.0 * total / max(len(texts), 1)


def cost_weight_for_cost(
    router: LearnedRouter,
    texts: Sequence[str],
    costs: dict[str, float],
    target_per_1k: float,
    iters: int = 30,
) -> float:
    """Smallest ``cost_weight`` whose expected cost per 1k requests stays <= the target."""
    if not texts:
        raise ValueError("no prompts to calibrate on")
    lo, hi = 0.0, 2.0  # at lam >= 1 no predicted gain (<= 1) pays for the dearest model
    if cost_per_1k_at_weight(router, texts, costs, lo) <= target_per_1k:
        return lo
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        if cost_per_1k_at_weight(router, texts, costs, mid) <= target_per_1k:
            hi = mid
        else:
            lo = mid
    return hi
