"""Validation-only comparison of two-model scoring modes and kNN evidence (RouteLLM pair).

    PYTHONPATH=src python bench/router_mode_val.py [TAG]

Train splits of routellm-mmlu + routellm-gsm8k only (the pair bars' protocol), contaminated
lines dropped, IDF fitted on those prompts, default features (2**17 buckets + static 64 d),
the selected multi-task option (C = 1, shared_scale = 0.5).  Three fits:

* ``val``: train minus the 20 % carve-out (``train._is_val``) -> scored on the carve-out
  (pooled MMLU + GSM8K, as ``train._select`` does; per source too);
* LOSO: fit on MMLU train, score GSM8K train; fit on GSM8K train, score MMLU train.

Criterion = ``(val + mean(LOSO)) / 2`` (``train._select``).  For each fit, several routing
scores built from (P_strong, P_weak) and from a kNN (cosine) over the training prompts'
vectors are scored by RouteLLM APGR.  Never reads a test split; MT-Bench is not used.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tierline.routing.learned.data import default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.train import _fit_group, _is_val, build_matrix

PAIR = ["gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"]



def _rank(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r / max(len(x) - 1, 1)


def _knn(
    Xtr: Any, Xev: Any, ytr: np.ndarray, ks: tuple[int, ...], chunk: int = 512
) -> dict[int, np.ndarray]:
    """Mean of ``ytr`` (n_tr, c) over the k most cosine-similar training rows."""
    out = {k: np.zeros((Xev.shape[0], ytr.shape[1])) for k in ks}
    kmax = max(ks)
    for s in range(0, Xev.shape[0], chunk):
        S = Xev[s : s + chunk] @ Xtr.T
        S = S.toarray() if hasattr(S, "toarray") else np.asarray(S)
        idx = np.argpartition(-S, kmax, axis=1)[:, :kmax]
        sims = np.take_along_axis(S, idx, 1)
        o = np.argsort(-sims, axis=1)
        idx = np.take_along_axis(idx, o, 1)
        for k in ks:
            out[k][s : s + chunk] = ytr[idx[:, :k]].mean(axis=1)
    return out


def _norm_rows(A: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(A, axis=1, keepdims=True)
    normed: np.ndarray = A / np.maximum(n, 1e-12)
    return normed


def main() -> None:
    tag = sys.argv[1] if len(sys.argv) > 1 else "modes"
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes(
        [data / "routellm-mmlu.jsonl", data / "routellm-gsm8k.jsonl"], split="train"
    )
    texts = [e.text for e in ex]
    feat = Featurizer(FeatureConfig(bits=17))
    t0 = time.time()
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    print("featurised", len(texts), round(time.time() - t0, 1), "s", flush=True)
    D = feat.hash_dim
    dense = _norm_rows(X[:, D:].toarray())
    Y = np.array([[e.outcomes[m].score for m in PAIR] for e in ex])
    src = np.array([e.source for e in ex])
    val = np.array([_is_val(t) for t in texts])
    splits = {
        "val": (np.nonzero(~val)[0], np.nonzero(val)[0]),
        "loso_gsm8k_held": (
            np.nonzero(src != "routellm-gsm8k")[0],
            np.nonzero(src == "routellm-gsm8k")[0],
        ),
        "loso_mmlu_held": (
            np.nonzero(src != "routellm-mmlu")[0],
            np.nonzero(src == "routellm-mmlu")[0],
        ),
    }
    res: dict[str, dict[str, float]] = {}
    for name, (tr, ev) in splits.items():
        t0 = time.time()
        f = _fit_group(X[tr], [ex[i] for i in tr], PAIR, 1.0, 0.5)
        Xe = X[ev]
        ls = Xe @ f[PAIR[0]][0] + f[PAIR[0]][1]
        lw = Xe @ f[PAIR[1]][0] + f[PAIR[1]][1]
        ps, pw = 1 / (1 + np.exp(-ls)), 1 / (1 + np.exp(-lw))
        ytr = np.stack([Y[tr, 0] - Y[tr, 1], 1 - Y[tr, 1]], axis=1)
        knn_sp = _knn(X[tr], Xe, ytr, (10, 30, 100))
        knn_de = _knn(dense[tr], dense[ev], ytr, (10, 30, 100))
        scores: dict[str, np.ndarray] = {
            "gain": ps - pw,
            "threshold": 1 - pw,
            "logit_gain": ls - lw,
            "p_strong_better": ps * (1 - pw),
        }
        for a in (0.25, 0.5, 0.75, 1.25, 1.5, 2.0):  # = a * P_s - P_w (+ const)
            scores[f"blend_a{a}"] = a * (ps - pw) + (1 - a) * (1 - pw)
        for nk in (10, 30, 100):
            for nm, kn in (("sparse", knn_sp[nk]), ("dense", knn_de[nk])):
                scores[f"knn_{nm}{nk}_gain"] = kn[:, 0]
                scores[f"knn_{nm}{nk}_thr"] = kn[:, 1]
                for b in (0.25, 0.5):
                    scores[f"gain+knn_{nm}{nk}_gain_b{b}"] = (1 - b) * (ps - pw) + b * kn[:, 0]
                    for a in (0.5, 0.75, 1.5):  # blend of the kNN-mixed probabilities
                        pk_s = (1 - b) * ps + b * (kn[:, 0] + 1 - kn[:, 1])
                        pk_w = (1 - b) * pw + b * (1 - kn[:, 1])
                        scores[f"a{a}*Ps-Pw,knn_{nm}{nk}_b{b}"] = a * pk_s - pk_w
                    scores[f"blend0.5+knn_{nm}{nk}_b{b}"] = (1 - b) * (
                        0.5 * (ps - pw) + 0.5 * (1 - pw)
                    ) + b * (0.5 * kn[:, 0] + 0.5 * kn[:, 1])
        qs, qw = Y[ev, 0], Y[ev, 1]
        row = {k: _apgr(v, qs, qw) for k, v in scores.items()}
        if name == "val":
            for s_ in ("routellm-mmlu", "routellm-gsm8k"):
                sel = src[ev] == s_
                for k, v in scores.items():
                    row[f"{k}@{s_}"] = _apgr(v[sel], qs[sel], qw[sel])
        res[name] = row
        print(name, "done", round(time.time() - t0, 1), "s", flush=True)
    keys = [k for k in res["val"] if "@" not in k]
    table = []
    for k in keys:
        vp, l1, l2 = res["val"][k], res["loso_gsm8k_held"][k], res["loso_mmlu_held"][k]
        crit = (vp + (l1 + l2) / 2) / 2
        table.append((crit, k, vp, res["val"][f"{k}@routellm-mmlu"],
                      res["val"][f"{k}@routellm-gsm8k"], l1, l2))
    table.sort(reverse=True)
    print("criterion | mode | val pooled | val MMLU | val GSM8K | LOSO GSM8K held | LOSO MMLU held")
    for t in table:
        print(f"{t[0]:.4f} | {t[1]} | " + " | ".join(f"{x:.4f}" for x in t[2:]))
    out = Path(os.environ.get("OUT", "build/router-mode-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
