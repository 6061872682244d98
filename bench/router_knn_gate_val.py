"""Validation-only: kNN evidence gated by neighbour similarity (pair-only, like the build).

    PYTHONPATH=src python bench/router_knn_gate_val.py

RouteLLM MMLU + GSM8K train only, option (1, 0) (the pair-only router's), dense static-
embedding kNN k = 100 on int8-quantised unit vectors; compares the plain mix, a
similarity-weighted mean (cos^8) and a weight gated by the mean top-100 cosine
(``w / (1 + exp(-(mean_sim - tau) / 0.03))``, i.e. fall back to the linear model for prompts
unlike the training data).  Validation carve-out + LOSO, never a test split.
"""

from __future__ import annotations

import numpy as np
from router_mode_val import PAIR  # bench/ is on sys.path when run as a script

from tierline.routing.learned.data import default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.model import dequantise_unit, quantise_unit
from tierline.routing.learned.train import _fit_group, _is_val, build_matrix


def main() -> None:
    data = default_data_dir()
    ex = load_outcomes(
        [data / "routellm-mmlu.jsonl", data / "routellm-gsm8k.jsonl"], split="train"
    )
    texts = [e.text for e in ex]
    feat = Featurizer(FeatureConfig(bits=17))
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    S = dequantise_unit(quantise_unit(X[:, feat.hash_dim :].toarray()))
    Y = np.array([[e.outcomes[m].score for m in PAIR] for e in ex])
    src = np.array([e.source for e in ex])
    val = np.array([_is_val(t) for t in texts])
    splits = {
        "val": (np.nonzero(~val)[0], np.nonzero(val)[0]),
        "gsm_held": (
            np.nonzero(src != "routellm-gsm8k")[0],
            np.nonzero(src == "routellm-gsm8k")[0],
        ),
        "mmlu_held": (
            np.nonzero(src != "routellm-mmlu")[0],
            np.nonzero(src == "routellm-mmlu")[0],
        ),
    }
    res: dict[str, dict[str, float]] = {}
    for name, (tr, ev) in splits.items():
        f = _fit_group(X[tr], [ex[i] for i in tr], PAIR, 1.0, 0.0)
        ps = 1 / (1 + np.exp(-(X[ev] @ f[PAIR[0]][0] + f[PAIR[0]][1])))
        pw = 1 / (1 + np.exp(-(X[ev] @ f[PAIR[1]][0] + f[PAIR[1]][1])))
        sims = S[ev] @ S[tr].T
        idx = np.argpartition(-sims, 99, axis=1)[:, :100]
        ts = np.take_along_axis(sims, idx, 1)
        ms = ts.mean(1)
        g = Y[tr, 0] - Y[tr, 1]
        kn = g[idx].mean(1)
        wts = np.maximum(ts, 0) ** 8
        knw = (g[idx] * wts).sum(1) / np.maximum(wts.sum(1), 1e-9)
        q = np.round(np.quantile(ms, [0.05, 0.25, 0.5, 0.75, 0.95]), 3)
        print(name, "mean top-100 cosine, quantiles 5/25/50/75/95 %:", q)
        qs, qw = Y[ev, 0], Y[ev, 1]
        row = {"off": _apgr(ps - pw, qs, qw)}
        for w in (0.25, 0.35):
            row[f"plain w{w}"] = _apgr((1 - w) * (ps - pw) + w * kn, qs, qw)
            row[f"simweighted^8 w{w}"] = _apgr((1 - w) * (ps - pw) + w * knw, qs, qw)
            for tau in (0.6, 0.7, 0.8, 0.85, 0.9):
                we = w / (1 + np.exp(-(ms - tau) / 0.03))
                row[f"gated tau{tau} w{w}"] = _apgr((1 - we) * (ps - pw) + we * kn, qs, qw)
        res[name] = row
    print("criterion | variant | val | LOSO GSM8K held | LOSO MMLU held")
    out = []
    for k in res["val"]:
        v, a, b = res["val"][k], res["gsm_held"][k], res["mmlu_held"][k]
        out.append(((v + (a + b) / 2) / 2, k, v, a, b))
    for t in sorted(out, reverse=True):
        print(f"{t[0]:.4f} | {t[1]} | {t[2]:.4f} | {t[3]:.4f} | {t[4]:.4f}")


if __name__ == "__main__":
    main()
