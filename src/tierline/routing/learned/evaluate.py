"""Offline evaluation of a :class:`LearnedRouter` on routing-outcomes data.

Costs: ``cost_usd`` when the data has it, else ``models.json`` list prices x estimated tokens:
input tokens = ``len(prompt) / 4``, output tokens = ``output_chars / 4`` when the line has it,
else a flat ``DEFAULT_OUTPUT_TOKENS`` (256) - an estimate, documented in docs/router-eval.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import metrics as M
from .data import Example
from .model import LearnedRouter

__all__ = ["cost_matrix", "many_model_eval", "quality_matrix", "two_model_eval"]

F64 = npt.NDArray[np.float64]
DEFAULT_OUTPUT_TOKENS = 256
LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 121)])


#: points of the RouteLLM threshold sweep: APGR needs at least two
MIN_RESULTS, MAX_RESULTS = 2, 100_000


class EvalError(ValueError):
    """Evaluation impossible (e.g. a model missing from the data or the router)."""


def _require(
    examples: Sequence[Example], models: Sequence[str], router: LearnedRouter
) -> tuple[list[Example], int]:
    """The examples that have an outcome for every one of ``models``, and how many did not."""
    if not examples:
        raise EvalError("no examples to evaluate (check --split / flags)")
    if len(set(models)) < 2:
        raise EvalError("the evaluation needs two different models (--strong/--weak, --models)")
    for m in models:
        if m not in router.profiles:
            raise EvalError(f"model {m!r} is not a profile of the router")
        if not any(m in e.outcomes for e in examples):
            raise EvalError(f"model {m!r} has no outcome in the data")
    kept = [e for e in examples if all(m in e.outcomes for m in models)]
    if not kept:
        raise EvalError(
            f"no prompt has an outcome for every one of {', '.join(models)} "
            "(choose the models to compare with --models A,B,...)"
        )
    return kept, len(examples) - len(kept)


def quality_matrix(
    examples: Sequence[Example], models: Sequence[str], both_turns: bool = False
) -> F64:
    """Scores (n, len(models)); ``both_turns`` averages MT-Bench turn 1 and turn 2 scores."""
    Q = np.array([[e.outcomes[m].score for m in models] for e in examples], dtype=np.float64)
    if both_turns:
        for i, e in enumerate(examples):
            t2 = e.meta.get("turn2_scores")
            if isinstance(t2, dict):
                for j, m in enumerate(models):
                    if isinstance(t2.get(m), int | float):
                        Q[i, j] = (Q[i, j] + float(t2[m])) / 2.0
    return Q


def cost_matrix(
    examples: Sequence[Example], models: Sequence[str], prices: dict[str, dict[str, Any]]
) -> F64:
    """Per-call USD cost (n, len(models)); see the module docstring for the estimate.

    NaN where a line has no ``cost_usd`` and the model has no list price in ``prices``.
    """
    C = np.zeros((len(examples), len(models)))
    for j, m in enumerate(models):
        pr = prices.get(m) or {}
        pin_, pout_ = pr.get("input_usd_per_mtok"), pr.get("output_usd_per_mtok")
        priced = isinstance(pin_, int | float) and isinstance(pout_, int | float)
        pin = float(pin_) if priced else 0.0  # type: ignore[arg-type]
        pout = float(pout_) if priced else 0.0  # type: ignore[arg-type]
        for i, e in enumerate(examples):
            o = e.outcomes[m]
            if o.cost_usd is not None:
                C[i, j] = o.cost_usd
                continue
            if not priced:
                C[i, j] = np.nan
                continue
            tin = len(e.text) / 4.0
            tout = o.output_chars / 4.0 if o.output_chars is not None else DEFAULT_OUTPUT_TOKENS
            C[i, j] = (tin * pin + tout * pout) / 1e6
    return C


def unpriced(C: F64, models: Sequence[str]) -> list[str]:
    """The models with an unknown cost on some line (see :func:`cost_matrix`)."""
    return [m for j, m in enumerate(models) if bool(np.isnan(C[:, j]).any())]


def route_scores(P: F64, mode: str) -> F64:
    """Two-model routing score from (n, 2) [strong, weak] predictions (higher -> strong).

    ``gain``: P_strong - P_weak (expected quality gain; what ``choose(lam=...)`` compares).
    ``threshold``: 1 - P_weak (``choose(quality=t)`` sends to strong iff P_weak < t).
    """
    if mode == "gain":
        out: F64 = P[:, 0] - P[:, 1]
        return out
    if mode == "threshold":
        out = 1.0 - P[:, 1]
        return out
    raise ValueError(f"unknown mode {mode!r}")


def two_model_eval(
    router: LearnedRouter,
    examples: Sequence[Example],
    strong: str,
    weak: str,
    prices: dict[str, dict[str, Any]],
    *,
    mode: str = "gain",
    num_results: int = 10,
    both_turns: bool = False,
) -> dict[str, Any]:
    """RouteLLM metrics (APGR, CPT50/80) + strong share / cost saving at 95% strong quality."""
    if isinstance(num_results, bool) or not MIN_RESULTS <= num_results <= MAX_RESULTS:
        raise EvalError(f"num_results (points of the threshold sweep) must be in "
                        f"{MIN_RESULTS}..{MAX_RESULTS} (got {num_results})")
    examples, skipped = _require(examples, [strong, weak], router)
    cols = [router.profiles.index(strong), router.profiles.index(weak)]
    P = router.predict_many([e.text for e in examples])[:, cols]
    Q = quality_matrix(examples, [strong, weak], both_turns)
    C = cost_matrix(examples, [strong, weak], prices)
    s = route_scores(P, mode)
    qs, qw = float(Q[:, 0].mean()), float(Q[:, 1].mean())
    thr, shares, quals = M.routellm_curve(s, Q[:, 0], Q[:, 1], num_results)
    share95, mask = M.share_at_quality(s, Q[:, 0], Q[:, 1], 0.95 * qs)
    routed_cost = float(np.where(mask, C[:, 0], C[:, 1]).sum())
    no_cost = unpriced(C, [strong, weak])
    rng = np.random.default_rng(0)
    _, rs, rq = M.routellm_curve(rng.random(len(s)), Q[:, 0], Q[:, 1], num_results)
    oracle = Q[:, 0] - Q[:, 1]
    _, os_, oq = M.routellm_curve(oracle + 1e-9 * rng.random(len(s)), Q[:, 0], Q[:, 1], 100)
    return {
        "n": len(examples),
        "skipped_incomplete": skipped,
        "strong": strong,
        "weak": weak,
        "mode": mode,
        "strong_quality": qs,
        "weak_quality": qw,
        "apgr": M.apgr(shares, quals, qs, qw),
        "cpt50": M.cpt(shares, quals, qs, qw, 0.5),
        "cpt80": M.cpt(shares, quals, qs, qw, 0.8),
        "strong_share_at_95": share95,
        "cost_saving_at_95": (
            None if no_cost or C[:, 0].sum() <= 0 else 1.0 - routed_cost / float(C[:, 0].sum())
        ),
        "unpriced_models": no_cost,
        "random_apgr": M.apgr(rs, rq, qs, qw),
        "oracle_apgr_100": M.apgr(os_, oq, qs, qw),
        "curve": {
            "threshold": thr.tolist(),
            "strong_share": shares.tolist(),
            "quality": quals.tolist(),
        },
    }


def _sweep(P: F64, C: F64, Q: F64, scale: float) -> tuple[F64, F64]:
    costs, quals = [], []
    for lam in LAMBDAS:
        # argmax of P - lam * C/scale; ties -> first column, columns sorted by mean cost
        pick = np.argmax(P - lam * C / scale, axis=1)
        r = np.arange(len(P))
        costs.append(float(C[r, pick].sum()))
        quals.append(float(Q[r, pick].mean()))
    return np.array(costs), np.array(quals)


def _quality_only(
    router: LearnedRouter, examples: Sequence[Example], models: list[str], skipped: int,
    no_cost: list[str],
) -> dict[str, Any]:
    """Many models without costs: the quality of the router's best-predicted pick against
    every single model and the oracle; the cost-quality numbers are null."""
    Q = quality_matrix(examples, models)
    cols = [router.profiles.index(m) for m in models]
    P = router.predict_many([e.text for e in examples])[:, cols]
    picked = float(Q[np.arange(len(Q)), np.argmax(P, axis=1)].mean())
    singles = {m: float(Q[:, j].mean()) for j, m in enumerate(models)}
    best = max(singles, key=lambda m: singles[m])
    return {
        "n": len(examples),
        "skipped_incomplete": skipped,
        "models": models,
        "unpriced_models": no_cost,
        "single_models": {m: {"cost_usd": None, "quality": q} for m, q in singles.items()},
        "random_router": {"cost_usd": None, "quality": float(Q.mean())},
        "router_best_predicted_quality": picked,
        "oracle_quality": float(Q.max(axis=1).mean()),
        "best_single": {"model": best, "cost_usd": None, "quality": singles[best]},
        "quality_delta_vs_best_single": picked - singles[best],
        "aiq": None,
        "aiq_oracle": None,
        "aiq_single_models_hull": None,
        "router_best_at_best_single_cost": None,
        "delta_vs_best_single": None,
    }


def many_model_eval(
    router: LearnedRouter,
    examples: Sequence[Example],
    models: Sequence[str],
    prices: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Cost-quality sweep (``choose(lam=...)`` for many lambdas), AIQ, baselines, oracle."""
    examples, skipped = _require(examples, models, router)
    C = cost_matrix(examples, models, prices)
    no_cost = unpriced(C, models)
    if no_cost:
        return _quality_only(router, examples, list(models), skipped, no_cost)
    order = np.argsort(C.mean(axis=0), kind="stable")
    models = [models[j] for j in order]
    C = C[:, order]
    Q = quality_matrix(examples, models)
    cols = [router.profiles.index(m) for m in models]
    P = router.predict_many([e.text for e in examples])[:, cols]
    scale = float(C.mean())
    rc, rq = _sweep(P, C, Q, scale)
    oc, oq = _sweep(Q, C, Q, scale)
    singles = {m: (float(C[:, j].sum()), float(Q[:, j].mean())) for j, m in enumerate(models)}
    c_min = min(c for c, _ in singles.values())
    c_max = max(c for c, _ in singles.values())
    sc = np.array([c for c, _ in singles.values()])
    sq = np.array([q for _, q in singles.values()])
    best = max(singles, key=lambda m: singles[m][1])
    bc, bq = singles[best]
    ok = rc <= bc * (1 + 1e-9)
    budgets = {}
    for frac in (0.1, 0.25, 0.5, 1.0):
        b = c_min + frac * (c_max - c_min)
        sel = rc <= b * (1 + 1e-9)
        budgets[f"{frac:g}"] = {
            "budget_usd": b,
            "router_quality": float(rq[sel].max()) if sel.any() else None,
        }
    return {
        "n": len(examples),
        "skipped_incomplete": skipped,
        "models": list(models),
        "single_models": {m: {"cost_usd": c, "quality": q} for m, (c, q) in singles.items()},
        "random_router": {"cost_usd": float(C.mean(axis=1).sum()), "quality": float(Q.mean())},
        "router_curve": {"cost_usd": rc.tolist(), "quality": rq.tolist()},
        "oracle_curve": {"cost_usd": oc.tolist(), "quality": oq.tolist()},
        "aiq": M.aiq(rc, rq, c_min, c_max),
        "aiq_oracle": M.aiq(oc, oq, c_min, c_max),
        "aiq_single_models_hull": M.aiq(sc, sq, c_min, c_max),
        "best_single": {"model": best, "cost_usd": bc, "quality": bq},
        "router_best_at_best_single_cost": float(rq[ok].max()) if ok.any() else None,
        "delta_vs_best_single": (float(rq[ok].max()) - bq) if ok.any() else None,
        "quality_at_budgets": budgets,
    }
