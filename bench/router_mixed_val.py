"""Unseen *mixed* traffic: scoring modes and source effects (llmrouter train split only).

    PYTHONPATH=src python bench/router_mixed_val.py [--folds 10] [--pairs 6]

The leave-one-family-out study (``router_loto_val.py``) scores each held-out task family on its
own: routing *within* one benchmark.  Real traffic - and mixed benchmarks such as MT-Bench,
whose 80 prompts span 8 categories - is a mix of kinds of prompt, where "which kind of prompt
needs the strong model" is most of the signal.  So here three task families at a time are held
out *together* and every model pair is scored with RouteLLM APGR pooled over the mixture
("mixed") and, for comparison, per family ("within"), for the scores
``alpha * P_strong - P_weak`` (alpha = 1: ``gain``, 0: ``threshold``).

Two fits are compared on the same folds for a few model pairs, each pair trained as a
two-model group (as the RouteLLM pair is): without and with **source effects** (one intercept
per model and training family, averaged into the bias afterwards, ``source_effects.py``).

Folds: ``--folds`` random triples of the 14 families (seeded).  Never reads a test split;
MT-Bench is not used.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from source_effects import fit_with_source_effects

from tierline.routing.learned.data import default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.model import dequantise_unit, knn_means, quantise_unit
from tierline.routing.learned.train import _fit_group, build_matrix

ALPHAS = (0.0, 0.5, 0.75, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--hold", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--min-gap", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--knn", nargs="*", default=["100,0.25", "400,0.5"])
    ap.add_argument("--feature", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="override a FeatureConfig field, e.g. static_weight=8")
    a = ap.parse_args()
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = [e for e in load_outcomes([data / "llmrouter.jsonl"], split="train")
          if "task_ambiguous" not in e.flags]
    fam = np.array([e.task.split("/")[0] for e in ex])
    # sources = task families, so the pair fit's source effects act on the training families
    ex = [replace(e, source=str(f)) for e, f in zip(ex, fam, strict=True)]
    texts = [e.text for e in ex]
    models = sorted({m for e in ex for m in e.outcomes})
    Y = np.array([[e.outcomes[m].score for m in models] for e in ex], np.float64)
    Y32 = Y.astype(np.float32)
    means = Y.mean(0)
    # the pairs: a spread of overall gaps, strong = the better model overall
    cand = sorted(
        ((float(means[i] - means[j]), models[i], models[j])
         for i in range(len(models)) for j in range(len(models)) if means[i] - means[j] >= 0.03),
    )
    step = max(1, len(cand) // a.pairs)
    pairs = [(s, w) for _, s, w in cand[::step][: a.pairs]]
    print("pairs (strong, weak, overall gap):")
    for s, w in pairs:
        print(f"  {s} / {w}: {means[models.index(s)] - means[models.index(w)]:.3f}")
    over = {k: float(v) for k, v in (x.split("=") for x in a.feature)}
    feat = Featurizer(FeatureConfig(bits=17, **over))  # type: ignore[arg-type]
    t0 = time.time()
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    S = quantise_unit(X[:, feat.hash_dim :].toarray())
    knns = [(int(k), float(w)) for k, w in (v.split(",") for v in a.knn)]
    print(f"featurised {len(texts)} prompts, {len(set(fam))} families, "
          f"{time.time() - t0:.0f} s", flush=True)
    fams = sorted(set(fam))
    rng = random.Random(a.seed)
    folds = [tuple(sorted(rng.sample(fams, a.hold))) for _ in range(a.folds)]
    res: dict[str, list[float]] = {}
    for fi, held in enumerate(folds):
        t1 = time.time()
        ev = np.nonzero(np.isin(fam, held))[0]
        tr = np.nonzero(~np.isin(fam, held))[0]
        ex_tr = [ex[i] for i in tr]
        V, Q = dequantise_unit(S[tr]), dequantise_unit(S[ev])
        kn = {
            nk: np.concatenate(
                [knn_means(V, Y32[tr], Q[r : r + 512].T, nk) for r in range(0, len(Q), 512)]
            )
            for nk in sorted({k for k, _ in knns})
        }
        for s, w in pairs:
            i, j = models.index(s), models.index(w)
            qs, qw = Y[ev, i], Y[ev, j]
            if qs.mean() - qw.mean() < a.min_gap:
                continue
            for fe in (False, True):
                if fe:
                    fits = fit_with_source_effects(X[tr], ex_tr, [s, w], 1.0, 0.0)
                else:
                    fits = _fit_group(X[tr], ex_tr, [s, w], 1.0, 0.0)
                Xe = X[ev]
                ps = 1 / (1 + np.exp(-(Xe @ fits[s][0] + fits[s][1])))
                pw = 1 / (1 + np.exp(-(Xe @ fits[w][0] + fits[w][1])))
                variants = [("linear", ps, pw)] + [
                    (f"kNN ({nk}, {wt})", (1 - wt) * ps + wt * kn[nk][:, i],
                     (1 - wt) * pw + wt * kn[nk][:, j])
                    for nk, wt in knns
                ]
                for (vname, vs, vw), al in ((v, al) for v in variants for al in ALPHAS):
                    sc = al * vs - vw
                    key = f"{'source effects' if fe else 'pooled fit'}, {vname}, alpha={al}"
                    res.setdefault(f"{key} | mixed", []).append(_apgr(sc, qs, qw))
                    within = []
                    for f in held:
                        m = fam[ev] == f
                        if qs[m].mean() - qw[m].mean() >= a.min_gap:
                            within.append(_apgr(sc[m], qs[m], qw[m]))
                    if within:
                        res.setdefault(f"{key} | within", []).append(float(np.mean(within)))
        print(f"fold {fi + 1}/{len(folds)} held {held}: {len(ev)} prompts, "
              f"{time.time() - t1:.0f} s", flush=True)
    print("\nmean APGR over folds x pairs (n cells)")
    print("fit, score | mixed (pooled over the held-out families) | within (per family)")
    keys = sorted({k.rsplit(" | ", 1)[0] for k in res})
    for k in keys:
        mx, wi = res.get(f"{k} | mixed", []), res.get(f"{k} | within", [])
        print(f"{k} | {np.mean(mx):.4f} (n={len(mx)}) | {np.mean(wi):.4f} (n={len(wi)})")
    out = Path(os.environ.get("OUT", "build/router-mode-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "mixed.json").write_text(json.dumps({"folds": folds, "pairs": pairs, "apgr": res},
                                               indent=1))


if __name__ == "__main__":
    main()
