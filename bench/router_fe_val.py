"""Source fixed effects: keep "which dataset does this look like" out of the text weights.

    PYTHONPATH=src python bench/router_fe_val.py

The pair router is trained on two sources whose strong-weak gap differs (GSM8K 0.21, MMLU
0.12), and every prompt's source is obvious from its text (multiple-choice layout or not).
So part of what the text weights learn is "looks like GSM8K -> bigger gap": true between
those two files, meaningless on a benchmark from elsewhere, and of no use for routing
*within* a benchmark (what APGR scores).  The standard remedy: during training, one indicator
column per source (per-model coefficients, so each model gets a source intercept), at
inference the column set to the source's share of the training prompts (the average
effect), since a live prompt has no source.

Validation only (train splits of routellm-mmlu + routellm-gsm8k, IDF on them, fits on train
minus the 20 % carve-out, scored on the carve-out): APGR per source and pooled, gain and
threshold, with and without the kNN mix.  LOSO is not informative here (one training source
makes the indicator a constant).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from source_effects import fit_with_source_effects as _fit

from tierline.routing.learned.data import Example, default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.model import dequantise_unit, knn_means, quantise_unit
from tierline.routing.learned.train import _fit_group, _is_val, build_matrix

PAIR = ["gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"]



def _report(
    name: str, ev: list[Example], src: np.ndarray, P: np.ndarray, acc: dict[str, list[float]]
) -> None:
    qs = np.array([e.outcomes[PAIR[0]].score for e in ev])
    qw = np.array([e.outcomes[PAIR[1]].score for e in ev])
    out = []
    for mode, score in (("gain", P[:, 0] - P[:, 1]), ("threshold", -P[:, 1])):
        per = {s: _apgr(score[src == s], qs[src == s], qw[src == s]) for s in sorted(set(src))}
        mean = float(np.mean(list(per.values())))
        acc.setdefault(f"{name} {mode}", []).append(mean)
        out.append(
            f"{mode}: per-source mean {mean:.4f} ("
            + ", ".join(f"{s.split('-')[1]} {v:.4f}" for s, v in per.items())
            + f"), pooled {_apgr(score, qs, qw):.4f}"
        )
    print(f"{name:34s} " + " | ".join(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--options", nargs="+", default=["1,0", "1,0.5"])
    ap.add_argument("--knn", nargs="+", default=["100,0.25"])
    ap.add_argument(
        "--folds", type=int, default=1, help="1: the carve-out; 4: all 4 hash folds of train"
    )
    a = ap.parse_args()
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes(
        [data / "routellm-mmlu.jsonl", data / "routellm-gsm8k.jsonl"], split="train"
    )
    texts = [e.text for e in ex]
    src = np.array([e.source for e in ex])
    t0 = time.time()
    feat = Featurizer(FeatureConfig(bits=17))
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    S = quantise_unit(X[:, feat.hash_dim :].toarray())
    print(f"featurised {len(ex)} prompts, {time.time() - t0:.0f} s", flush=True)
    acc: dict[str, list[float]] = {}
    # the test split is the text hash % 5 == 0, so train holds folds 1-4 of the same hash
    for fold in range(1, a.folds + 1) if a.folds > 1 else [1]:
        if a.folds == 1:
            val = np.array([_is_val(t) for t in texts])
        else:
            val = np.array([_fold(t) == fold for t in texts])
            print(f"fold {fold}", flush=True)
        _one(a, ex, X, S, src, val, acc)
    print("\nmean of the per-source mean APGR over folds")
    for k, v in acc.items():
        print(f"{k:44s} {np.mean(v):.4f}  ({len(v)} folds)")


def _fold(text: str) -> int:
    import hashlib

    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % 5


def _one(
    a: argparse.Namespace,
    ex: list[Example],
    X: Any,
    S: np.ndarray,
    src: np.ndarray,
    val: np.ndarray,
    acc: dict[str, list[float]],
) -> None:
    tr, ev = np.nonzero(~val)[0], np.nonzero(val)[0]
    tr_ex, ev_ex = [ex[i] for i in tr], [ex[i] for i in ev]
    Y = np.array([[e.outcomes[m].score for m in PAIR] for e in ex], np.float32)
    # source-centred outcomes (the kNN analogue of the source effects): each training
    # prompt's outcomes minus its source's mean, plus the overall mean
    Yc = Y.copy()
    for s_ in set(src[tr]):
        rows = tr[src[tr] == s_]
        Yc[rows] += Y[tr].mean(axis=0) - Y[rows].mean(axis=0)
    V, Q = dequantise_unit(S[tr]), dequantise_unit(S[ev]).T
    knns = [(int(x.split(",")[0]), float(x.split(",")[1])) for x in a.knn]
    kn = {k: (knn_means(V, Y[tr], Q, k), knn_means(V, Yc[tr], Q, k)) for k, _ in knns}
    for opt in a.options:
        C, sc = (float(x) for x in opt.split(","))
        base = _fit_group(X[tr], tr_ex, PAIR, C, sc)
        fe = _fit(X[tr], tr_ex, PAIR, C, sc)  # as shipped: the average effect is in the bias
        for name, fits in (("base", base), ("source FE", fe)):
            Xe = X[ev]
            P = np.stack([1 / (1 + np.exp(-(Xe @ fits[m][0] + fits[m][1]))) for m in PAIR], 1)
            _report(f"{opt} {name}", ev_ex, src[ev], P, acc)
            for nk, w in knns:
                raw, cen = kn[nk]
                _report(f"{opt} {name} + kNN {nk},{w}", ev_ex, src[ev], (1 - w) * P + w * raw,
                        acc)
                if name == "source FE":
                    _report(f"{opt} {name} + centred kNN {nk},{w}", ev_ex, src[ev],
                            (1 - w) * P + w * cen, acc)


if __name__ == "__main__":
    main()
