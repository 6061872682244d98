"""Narrow training, unseen benchmarks: which two-model score transfers (llmrouter train only)?

    PYTHONPATH=src python bench/router_narrow_ood_val.py

The issue's pair protocol trains on two sources (MMLU + GSM8K) and scores, among others, a
benchmark with no training split at all (MT-Bench); the router will be scored on more such
benchmarks.  The same situation, built from llmrouter's train split with its 9 models: train
on two task families only (IDF on their prompts), then score every *other* family as an
unseen benchmark, for every model pair whose mean quality differs by >= 0.05 there, with
RouteLLM APGR.  Training pairs: (mmlu, gsm8k) - the issue's own choice - and three others.

Scores compared (P = predicted P(good)): ``alpha * P_strong - P_weak`` for alpha in
{1 (gain), 0.75, 0.5, 0.25, 0 (threshold = 1 - P_weak)}, ``P_strong * (1 - P_weak)`` ("strong
right, weak wrong"), with the linear fits and with the kNN mix.  Never reads a test split;
MT-Bench is not used.
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

ALPHAS = (1.0, 0.75, 0.5, 0.25, 0.0)
TRAIN_PAIRS = (
    ("mmlu", "gsm8k"),
    ("arc_challenge", "math"),
    ("commonsense_qa", "mbpp"),
    ("openbook_qa", "natural_qa"),
)



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--options", nargs="+", default=["1,0", "1,0.5"])
    ap.add_argument("--knn", default="100,0.25")
    ap.add_argument("--min-gap", type=float, default=0.05)
    a = ap.parse_args()
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes([data / "llmrouter.jsonl"], split="train", skip_overlap=True)
    models = sorted({m for e in ex for m in e.outcomes})
    ex = [e for e in ex if all(m in e.outcomes for m in models)]
    fam = np.array([e.task.split("/")[0] for e in ex])
    texts = [e.text for e in ex]
    Y = np.array([[e.outcomes[m].score for m in models] for e in ex], np.float32)
    nk, w = (int(a.knn.split(",")[0]), float(a.knn.split(",")[1]))
    scores = [f"alpha={al}" for al in ALPHAS] + ["Ps(1-Pw)"]
    # res[option][variant][score] -> list of per-(train pair, held family) means over pairs
    res: dict[str, dict[str, dict[str, list[float]]]] = {}
    per_family: dict[str, dict[str, list[float]]] = {}
    for pair in TRAIN_PAIRS:
        t0 = time.time()
        tr = np.nonzero(np.isin(fam, pair))[0]
        feat = Featurizer(FeatureConfig(bits=17))
        feat.fit_idf([texts[i] for i in tr])
        X = build_matrix(feat, texts).tocsr()
        S = quantise_unit(X[:, feat.hash_dim :].toarray())
        V = dequantise_unit(S[tr])
        for opt in a.options:
            C, sc = (float(x) for x in opt.split(","))
            fits = _fit_group(X[tr], [ex[i] for i in tr], models, C, sc)
            for f in sorted(set(fam) - set(pair)):
                ev = np.nonzero(fam == f)[0]
                Xe = X[ev]
                P = np.stack(
                    [1 / (1 + np.exp(-(Xe @ fits[m][0] + fits[m][1]))) for m in models], 1
                )
                Q = dequantise_unit(S[ev])
                kn = np.concatenate(
                    [knn_means(V, Y[tr], Q[s : s + 512].T, nk) for s in range(0, len(Q), 512)]
                )
                for vname, Pv in (("linear", P), (f"knn{nk},{w}", (1 - w) * P + w * kn)):
                    acc: dict[str, list[float]] = {s: [] for s in scores}
                    for i in range(len(models)):
                        for j in range(len(models)):
                            qs, qw = Y[ev, i], Y[ev, j]
                            if qs.mean() - qw.mean() < a.min_gap:
                                continue
                            for al in ALPHAS:
                                acc[f"alpha={al}"].append(
                                    _apgr(al * Pv[:, i] - Pv[:, j], qs, qw)
                                )
                            acc["Ps(1-Pw)"].append(_apgr(Pv[:, i] * (1 - Pv[:, j]), qs, qw))
                    for s, v in acc.items():
                        if v:
                            res.setdefault(opt, {}).setdefault(vname, {}).setdefault(
                                s, []
                            ).append(float(np.mean(v)))
                            if opt == a.options[0] and vname == "linear":
                                per_family.setdefault(f, {}).setdefault(s, []).append(
                                    float(np.mean(v))
                                )
        print(f"trained on {pair}: {len(tr)} prompts, {time.time() - t0:.0f} s", flush=True)
    print(
        "\nmean APGR over (training pair, unseen family) cells, each = mean over model pairs"
    )
    print("option | variant | " + " | ".join(scores))
    for opt, per_v in res.items():
        for vname, per_s in per_v.items():
            print(
                f"{opt} | {vname} | "
                + " | ".join(f"{np.mean(per_s[s]):.4f}" for s in scores)
                + f"  (n={len(per_s[scores[0]])})"
            )
    print(f"\nper unseen family ({a.options[0]}, linear): " + " | ".join(scores))
    for f, per_s in sorted(per_family.items()):
        print(f"{f:22s} " + " ".join(f"{np.mean(per_s[s]):.3f}" for s in scores))
    out = Path(os.environ.get("OUT", "build/router-mode-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "narrow_ood.json").write_text(json.dumps({"res": res, "per_family": per_family}))


if __name__ == "__main__":
    main()
