"""Regularisation strength on "fresh benchmarks": is a fixed C = 0.5-1 right for every size?

    PYTHONPATH=src python bench/router_c_val.py [--cs 0.25 0.5 1 2 4 8]

The router is scored on routing data from benchmarks that are not in ``../shared``, trained on
their own train split.  To imitate that, every task family of llmrouter's *train* split (14)
and each RouteLLM source's *train* split (MMLU, GSM8K) is treated as a benchmark of its own:
its prompts are cut 80 / 20 by a text hash (``% 5 == 2``, disjoint from the router's own
validation carve-out ``% 5 == 1``), features (IDF) are fitted on the 80 %, independent L2
logistic regressions per model for each C, scored on the 20 %:

* ``pairs``: mean RouteLLM APGR (gain score) over the model pairs whose mean quality differs by
  >= 0.05 on the 20 %;
* ``best``: mean true score of the predicted-best model (many-model benchmarks).

Then "inner": C picked per benchmark by the router's own validation carve-out of the 80 %
(``% 5 == 1``), i.e. what adding C to the selection grid would do.  Never reads a test split.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from tierline.routing.learned.data import Example, default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.train import _fit_group, _prob_metric, _probs, build_matrix


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % 5


def _pairs_metric(ex: list[Example], P: dict[str, np.ndarray], min_gap: float) -> float:
    from tierline.routing.learned.metrics import apgr_of

    names = sorted(P)
    Q = np.array([[e.outcomes[m].score for m in names] for e in ex])
    vals = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            qa, qb = Q[:, i], Q[:, j]
            if abs(qa.mean() - qb.mean()) < min_gap:
                continue
            s, w = (i, j) if qa.mean() > qb.mean() else (j, i)
            vals.append(apgr_of(P[names[s]] - P[names[w]], Q[:, s], Q[:, w]))
    return float(np.mean(vals)) if vals else float("nan")


def _bench(
    name: str, ex: list[Example], cs: list[float], min_gap: float
) -> dict[str, list[float]]:
    models = sorted({m for e in ex for m in e.outcomes})
    ex = [e for e in ex if all(m in e.outcomes for m in models)]
    fit = [e for e in ex if _h(e.text) != 2]
    ev = [e for e in ex if _h(e.text) == 2]
    feat = Featurizer(FeatureConfig(bits=17))
    feat.fit_idf([e.text for e in fit])
    Xf = build_matrix(feat, [e.text for e in fit]).tocsr()
    Xe = build_matrix(feat, [e.text for e in ev]).tocsr()
    inner_val = np.array([_h(e.text) == 1 for e in fit])
    fi = [e for e, v in zip(fit, inner_val, strict=True) if not v]
    vi = [e for e, v in zip(fit, inner_val, strict=True) if v]
    out: dict[str, list[float]] = {"pairs": [], "best": [], "inner": []}
    for C in cs:
        f = _fit_group(Xf, fit, models, C, 0.0)
        P = _probs(Xe, f)
        out["pairs"].append(_pairs_metric(ev, P, min_gap))
        out["best"].append(_prob_metric(ev, P) if len(models) > 2 else float("nan"))
        fin = _fit_group(Xf[np.nonzero(~inner_val)[0]], fi, models, C, 0.0)
        out["inner"].append(_prob_metric(vi, _probs(Xf[np.nonzero(inner_val)[0]], fin)))
    print(
        f"{name:28s} n={len(fit):5d}/{len(ev):4d} "
        + " ".join(f"{v:.4f}" for v in out["pairs"])
        + " | best "
        + " ".join(f"{v:.4f}" for v in out["best"])
        + " | inner "
        + " ".join(f"{v:.4f}" for v in out["inner"]),
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cs", nargs="+", type=float, default=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--min-gap", type=float, default=0.05)
    a = ap.parse_args()
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    benches: dict[str, list[Example]] = {}
    for src in ("routellm-gsm8k", "routellm-mmlu"):
        benches[src] = load_outcomes([data / f"{src}.jsonl"], split="train")
    for e in load_outcomes([data / "llmrouter.jsonl"], split="train", skip_overlap=True):
        benches.setdefault("llmrouter/" + e.task.split("/")[0], []).append(e)
    print(f"C = {a.cs}: pairwise APGR (gain) on the 20 % | predicted-best quality | inner val")
    t0 = time.time()
    res = {n: _bench(n, ex, a.cs, a.min_gap) for n, ex in sorted(benches.items())}
    print(f"({time.time() - t0:.0f} s)")
    for key in ("pairs", "best"):
        M = np.array([res[n][key] for n in res])
        ok = ~np.isnan(M).any(axis=1)
        if not ok.any():
            continue
        mean = M[ok].mean(axis=0)
        wins = np.bincount(np.argmax(M[ok], axis=1), minlength=len(a.cs))
        # C picked by the inner validation of each benchmark (what a selection grid would do)
        inner = np.array([res[n]["inner"] for n in res])[ok]
        picked = M[ok][np.arange(ok.sum()), np.nanargmax(inner, axis=1)]
        print(
            f"{key}: mean over {int(ok.sum())} benchmarks "
            + " ".join(f"C={c:g}: {v:.4f}" for c, v in zip(a.cs, mean, strict=True))
            + f" | inner-selected C: {picked.mean():.4f} | wins per C {wins.tolist()}"
        )


if __name__ == "__main__":
    main()
