"""Calibrate the learned strategy's knob on a sample of traffic.

* ``quality`` (``choose(pred, costs, quality=t)``): a prompt goes to the cheapest model whose
  predicted quality reaches ``t``; raising ``t`` sends more traffic to expensive models.
* ``max_loss`` (the gateway's default knob, ``choose(pred, costs, max_loss=d)``): a prompt
  goes to the cheapest model predicted within ``d`` of the best one; with two models the
  strong one iff its predicted gain exceeds ``d``; lowering ``d`` sends more traffic to
  expensive models.
* ``cost_weight`` (``choose(pred, costs / max(costs), lam=l)``):
  a prompt goes to the model maximising P(good) - l * cost / max_cost; with two models the
  strong one iff its predicted gain exceeds ``l * (1 - c_weak / c_strong)``; lowering ``l``
  sends more traffic to expensive models.

Given a sample of prompts we pick the value so that the share of strong-model calls (two
models) or the expected cost per 1k requests (any number of models, with per-request cost
estimates) matches a target.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

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
    "parse_costs",
    "threshold_for_cost",
    "threshold_for_strong_share",
]


def parse_costs(text: str) -> dict[str, float]:
    """``model=USD,model=USD,...`` (USD per request, finite and >= 0) -> ``{model: USD}``."""
    costs: dict[str, float] = {}
    for item in text.split(","):
        model, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not model:
            raise ValueError(f"costs: expected model=USD,model=USD,... (got {text!r})")
        try:
            usd = float(value)
        except ValueError:
            raise ValueError(f"costs: {model}: {value!r} is not a number") from None
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"costs: {model}: must be a finite number >= 0 (got {value})")
        costs[model] = usd
    return costs


def _column(router: LearnedRouter, model: str) -> int:
    """The column of ``model`` in :meth:`LearnedRouter.predict_many`'s output."""
    if model not in router.profiles:
        raise ValueError(f"model {model!r} is not a profile of the router "
                         f"(profiles: {', '.join(router.profiles)})")
    return router.profiles.index(model)


def _check_pair(strong: str, weak: str) -> None:
    if strong == weak:
        raise ValueError(f"the strong and the weak model must differ (both are {strong!r})")


def _check_costs(router: LearnedRouter, costs: dict[str, float], target_per_1k: float) -> None:
    """A cost target is a finite number >= 0; every costed model is a router profile."""
    if not math.isfinite(target_per_1k) or target_per_1k < 0:
        raise ValueError(f"the cost per 1k requests must be a finite number >= 0 "
                         f"(got {target_per_1k})")
    for m in costs:
        _column(router, m)
    if len(costs) < 2:
        raise ValueError("give the costs of at least two models (--costs model=USD,...)")


def threshold_for_strong_share(
    router: LearnedRouter, texts: Sequence[str], weak: str, target_share: float,
    strong: str | None = None,
) -> float:
    """Threshold ``t`` such that about ``target_share`` of prompts go to ``strong`` under
    ``choose(quality=t)``: with two models, strong iff P(weak) < t and P(strong) > P(weak)
    (below the target neither reaches it, and the better predicted one serves). Without
    ``strong``, the share of prompts with P(weak) < t. Mid-way between two prompts' values,
    so the gateway's own predictions land on the same side."""
    _check(texts)
    if not 0.0 <= target_share <= 1.0:
        raise ValueError("target share must be in [0, 1]")
    P = router.predict_many(texts)
    pw = P[:, _column(router, weak)]
    if strong is not None:
        _check_pair(strong, weak)
        pw = pw[P[:, _column(router, strong)] > pw]  # only these can go to strong
    pw = np.sort(pw)
    k = round(target_share * len(texts))
    if k > len(pw):
        _warn_unreachable(target_share, len(pw) / len(texts))
        k = len(pw)
    if k <= 0:
        return float(pw[0]) if len(pw) else 1.0  # P(weak) >= t for all -> no strong call
    if k >= len(pw):
        return float(min(1.0, pw[-1] + 1e-6))
    return float((pw[k - 1] + pw[k]) / 2.0)


def _warn_unreachable(target: float, best: float) -> None:
    print(f"warning: a strong share of {target:g} is out of reach: only {best:.4f} of these "
          "prompts are predicted to gain from the strong model", file=sys.stderr)


def _per_1k(
    router: LearnedRouter, texts: Sequence[str], costs: dict[str, float],
    relative: bool = False, **knob: float,
) -> float:
    """Expected cost of 1,000 requests like ``texts`` under ``choose(**knob)`` (``costs`` per
    request; ``relative``: choose sees them divided by the dearest, as the gateway's
    cost_weight does)."""
    seen = costs
    if relative:
        top = max(costs.values(), default=0.0) or 1.0
        seen = {m: c / top for m, c in costs.items()}
    total = sum(costs[choose(router.predict(t), seen, **knob)[0]] for t in texts)
    return 1000.0 * total / max(len(texts), 1)


def cost_per_1k(
    router: LearnedRouter, texts: Sequence[str], costs: dict[str, float], threshold: float
) -> float:
    """Expected cost of 1,000 requests like ``texts`` at quality ``threshold``."""
    return _per_1k(router, texts, costs, quality=threshold)


def cost_per_1k_at_loss(
    router: LearnedRouter, texts: Sequence[str], costs: dict[str, float], max_loss: float
) -> float:
    """Expected cost of 1,000 requests like ``texts`` at ``max_loss``."""
    return _per_1k(router, texts, costs, max_loss=max_loss)


def cost_per_1k_at_weight(
    router: LearnedRouter, texts: Sequence[str], costs: dict[str, float], lam: float
) -> float:
    """Expected cost of 1,000 requests like ``texts`` at ``cost_weight = lam``."""
    return _per_1k(router, texts, costs, relative=True, lam=lam)


def _bisect(
    cost_at: Callable[[float], float], lo: float, hi: float, target: float, iters: int
) -> float:
    """The knob value nearest ``lo`` (the dear end) whose cost stays <= ``target``, for a
    cost that falls from ``lo`` towards ``hi`` (the cheap end); ``lo`` itself if affordable.

    The cost is a step function of the knob; the value returned is the middle of the step
    found, not its edge, so that a rounded value - or the gateway's own, one-prompt-at-a-
    time predictions - stay on the same side of every prompt's decision."""
    end = hi
    if cost_at(lo) <= target:
        return lo
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        if cost_at(mid) <= target:
            hi = mid
        else:
            lo = mid
    # hi is just past an edge: find where this step ends, towards the cheap end
    here, a, b = cost_at(hi), hi, end
    if cost_at(end) == here:
        a = b = end
    for _ in range(iters):
        mid = (a + b) / 2.0
        if cost_at(mid) == here:
            a = mid
        else:
            b = mid
    return (hi + a) / 2.0


def _check(texts: Sequence[str]) -> None:
    if not texts:
        raise ValueError("no prompts to calibrate on")


def threshold_for_cost(
    router: LearnedRouter,
    texts: Sequence[str],
    costs: dict[str, float],
    target_per_1k: float,
    iters: int = 30,
) -> float:
    """Largest threshold whose expected cost per 1k requests stays <= ``target_per_1k``."""
    _check(texts)
    _check_costs(router, costs, target_per_1k)
    if cost_per_1k(router, texts, costs, 0.0) > target_per_1k:
        return 0.0
    return _bisect(lambda t: cost_per_1k(router, texts, costs, t), 1.0, 0.0,
                   target_per_1k, iters)


def max_loss_for_cost(
    router: LearnedRouter,
    texts: Sequence[str],
    costs: dict[str, float],
    target_per_1k: float,
    iters: int = 30,
) -> float:
    """Smallest ``max_loss`` whose expected cost per 1k requests stays <= the target (at 1
    every candidate qualifies: the cheapest)."""
    _check(texts)
    _check_costs(router, costs, target_per_1k)
    return _bisect(lambda d: cost_per_1k_at_loss(router, texts, costs, d), 0.0, 1.0,
                   target_per_1k, iters)


def cost_weight_for_cost(
    router: LearnedRouter,
    texts: Sequence[str],
    costs: dict[str, float],
    target_per_1k: float,
    iters: int = 30,
) -> float:
    """Smallest ``cost_weight`` whose expected cost per 1k requests stays <= the target.
    The cheap end of the search doubles until the target is met (the costs are relative to
    the dearest, so two cheap models of nearly one price need a large weight to separate)."""
    _check(texts)
    _check_costs(router, costs, target_per_1k)
    hi = 2.0
    while cost_per_1k_at_weight(router, texts, costs, hi) > target_per_1k and hi < 1e9:
        hi *= 8.0
    return _bisect(lambda lam: cost_per_1k_at_weight(router, texts, costs, lam), 0.0, hi,
                   target_per_1k, iters + int(math.log2(hi)))


def _gain_threshold(
    router: LearnedRouter, texts: Sequence[str], strong: str, weak: str, target_share: float
) -> float:
    """Predicted gain P(strong) - P(weak) above which ``target_share`` of prompts lie."""
    _check(texts)
    _check_pair(strong, weak)
    cs, cw = _column(router, strong), _column(router, weak)
    if not 0.0 <= target_share <= 1.0:
        raise ValueError("target share must be in [0, 1]")
    P = router.predict_many(texts)
    gain = np.sort(P[:, cs] - P[:, cw])
    k = len(gain) - round(target_share * len(gain))  # prompts that stay on the weak model
    positive = int((gain > 0).sum())
    if len(gain) - k > positive:  # no knob >= 0 sends a prompt predicted to lose
        _warn_unreachable(target_share, positive / len(gain))
    if k <= 0:
        return float(gain[0]) - 1e-6
    if k >= len(gain):
        return float(gain[-1]) + 1e-6  # a margin: strong iff gain > knob, none is
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
    _check_pair(strong, weak)
    missing = [m for m in (strong, weak) if m not in costs]
    if missing:
        raise ValueError(f"no cost given for {', '.join(missing)} (--costs model=USD,...)")
    if costs[strong] <= costs[weak]:
        raise ValueError(f"{strong} must cost more per request than {weak}")
    g = _gain_threshold(router, texts, strong, weak, target_share)
    return max(0.0, g / (1.0 - costs[weak] / costs[strong]))
