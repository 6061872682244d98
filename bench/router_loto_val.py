"""Leave-one-task-family-out study of the two-model scoring modes (llmrouter train only).

    PYTHONPATH=src python bench/router_loto_val.py [--options 1,0 0.5,2] [--knn 100,0.15]

The question: which routing score generalises to prompts of a *task the router never saw*
(the router is scored on benchmarks that are not in ``../shared``)?  The RouteLLM pair only
has two sources (MMLU, GSM8K), so leave-one-source-out there is two data points.  llmrouter's
train split has 14 task families (``task`` up to the first ``/``) and 9 models, i.e. many
strong / weak pairs: for each family, fit on the other 13 (train split only), predict the
held-out family, and score every model pair whose mean quality differs by >= 0.05 on it with
RouteLLM APGR, for the scores ``alpha * P_strong - P_weak`` (alpha = 1: ``gain``, 0:
``threshold`` = 1 - P_weak, up to a constant) with and without the kNN evidence.

Never reads a test split; MT-Bench is not used.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from tierline.routing.learned.data import default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.model import dequantise_unit, knn_means, quantise_unit
from tierline.routing.learned.train import _fit_group, build_matrix

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--options", nargs="+", default=["1,0", "0.5,2"])
    ap.add_argument("--knn", nargs="*", default=["100,0.15", "100,0.35"])
    ap.add_argument("--min-gap", type=float, default=0.05)
    a = ap.parse_args()
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes([data / "llmrouter.jsonl"], split="train")
    texts = [e.text for e in ex]
    models = sorted({m for e in ex for m in e.outcomes})
    fam = np.array([e.task.split("/")[0] for e in ex])
    feat = Featurizer(FeatureConfig(bits=17))
    t0 = time.time()
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    S = quantise_unit(X[:, feat.hash_dim :].toarray())
    Y = np.array([[e.outcomes[m].score for m in models] for e in ex], np.float32)
    print(f"featurised {len(texts)} prompts, {len(set(fam))} families, "
          f"{time.time() - t0:.0f} s", flush=True)
    knns = [(int(k), float(w)) for k, w in (s.split(",") for s in a.knn)]
    res: dict[str, dict[str, list[float]]] = {}
    best_q: dict[str, list[float]] = {}
    for opt in a.options:
        C, sc = (float(x) for x in opt.split(","))
        for f in sorted(set(fam)):
            t1 = time.time()
            tr, ev = np.nonzero(fam != f)[0], np.nonzero(fam == f)[0]
            fits = _fit_group(X[tr], [ex[i] for i in tr], models, C, sc)
            Xe = X[ev]
            P = np.stack([1 / (1 + np.exp(-(Xe @ fits[m][0] + fits[m][1]))) for m in models], 1)
            V, Q = dequantise_unit(S[tr]), dequantise_unit(S[ev])
            variants = {"linear": P}
            for nk, w in knns:
                kn = np.concatenate(
                    [knn_means(V, Y[tr], Q[s : s + 512].T, nk) for s in range(0, len(Q), 512)]
                )
                variants[f"knn{nk},{w}"] = (1 - w) * P + w * kn
            for vname, Pv in variants.items():
                key = f"C={C},s={sc} {vname}"
                best_q.setdefault(key, []).append(
                    float(Y[ev][np.arange(len(ev)), np.argmax(Pv, 1)].mean())
                )
                for i in range(len(models)):
                    for j in range(len(models)):
                        qs, qw = Y[ev, i], Y[ev, j]
                        if qs.mean() - qw.mean() < a.min_gap:
                            continue
                        for al in ALPHAS:
                            res.setdefault(f"{key} alpha={al}", {}).setdefault(f, []).append(
                                _apgr(al * Pv[:, i] - Pv[:, j], qs, qw)
                            )
            print(f"{opt} held {f}: {len(ev)} prompts, {time.time() - t1:.0f} s", flush=True)
    print("\nmean APGR over held-out families (each family = mean over its pairs)")
    print("variant | mean over families | " + " | ".join(sorted(set(fam))))
    rows = []
    for k, per in res.items():
        fm = {f: float(np.mean(v)) for f, v in per.items()}
        rows.append((float(np.mean(list(fm.values()))), k, fm))
    rows.sort(reverse=True)
    fams = sorted(set(fam))
    for m, k, fm in rows:
        print(f"{k} | {m:.4f} | " + " | ".join(f"{fm.get(f, float('nan')):.3f}" for f in fams))
    print("\nquality of the predicted-best model (mean over held-out families)")
    for k, v in sorted(best_q.items(), key=lambda kv: -float(np.mean(kv[1]))):
        print(f"{k} | {np.mean(v):.4f}")
    out = Path(os.environ.get("OUT", "build/router-mode-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "loto.json").write_text(json.dumps({"apgr": res, "best_quality": best_q}, indent=1))


if __name__ == "__main__":
    main()
