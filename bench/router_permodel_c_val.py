"""Per-model regularisation for the RouteLLM pair: does shrinking the strong model's
prompt-dependence more than the weak one's generalise better?

    PYTHONPATH=src python bench/router_permodel_c_val.py

With two models the gain score is ``P_s - P_w``. As ``C_strong -> 0`` the strong model's
prediction becomes a constant and the gain score turns into the threshold score ``1 - P_w``;
``C_strong = C_weak`` is the shipped independent fit. Unlike the ``alpha * P_s - P_w`` blends
(``router_mode_val.py``), a smaller ``C_strong`` shrinks only the directions the strong
model's data do not support. Independent L2 logistic regressions (option (1, 0) as the
pair-only router selects), with and without the kNN mix (100, 0.25), scored by RouteLLM APGR
on: the 20 % carve-out ("val"), leave-one-source-out (2) - together the ``train._select``
criterion - and leave-task-groups-out (5 folds by a hash of the task name, as
``router_task_cv.py``). Train splits only; never reads a test split; MT-Bench unused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from tierline.routing.learned.data import default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.model import dequantise_unit, knn_means, quantise_unit
from tierline.routing.learned.train import _fit_one, _is_val, build_matrix

PAIR = ["gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"]
C_STRONG = (0.03, 0.1, 0.25, 0.5, 1.0, 2.0)
C_WEAK = (0.5, 1.0, 2.0)
KNN = ((0, 0.0), (100, 0.25))


def _fold(task: str, n: int) -> int:
    return int(hashlib.sha256(task.encode()).hexdigest(), 16) % n


def main() -> None:
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes(
        [data / "routellm-mmlu.jsonl", data / "routellm-gsm8k.jsonl"], split="train"
    )
    texts = [e.text for e in ex]
    Y = np.array([[e.outcomes[m].score for m in PAIR] for e in ex], np.float32)
    src = np.array([e.source for e in ex])
    val = np.array([_is_val(t) for t in texts])
    fold = np.array([_fold(e.task, 5) for e in ex])
    feat = Featurizer(FeatureConfig(bits=17))
    t0 = time.time()
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    S = quantise_unit(X[:, feat.hash_dim :].toarray())
    print(f"featurised {len(texts)} prompts in {time.time() - t0:.0f} s", flush=True)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "val": (np.nonzero(~val)[0], np.nonzero(val)[0]),
        "loso_gsm8k": (np.nonzero(src != "routellm-gsm8k")[0],
                       np.nonzero(src == "routellm-gsm8k")[0]),
        "loso_mmlu": (np.nonzero(src != "routellm-mmlu")[0],
                      np.nonzero(src == "routellm-mmlu")[0]),
    }
    for f in range(5):
        splits[f"task{f}"] = (np.nonzero(fold != f)[0], np.nonzero(fold == f)[0])
    res: dict[str, dict[str, float]] = {}
    for name, (tr, ev) in splits.items():
        t1 = time.time()
        tr_ex = [ex[i] for i in tr]
        Xe = X[ev]
        ps = {c: 1 / (1 + np.exp(-(Xe @ w + b)))
              for c in C_STRONG for w, b in [_fit_one(X[tr], tr_ex, PAIR[0], c)]}
        pw = {c: 1 / (1 + np.exp(-(Xe @ w + b)))
              for c in C_WEAK for w, b in [_fit_one(X[tr], tr_ex, PAIR[1], c)]}
        V, Q = dequantise_unit(S[tr]), dequantise_unit(S[ev])
        kn = np.concatenate(
            [knn_means(V, Y[tr], Q[r : r + 512].T, 100) for r in range(0, len(Q), 512)]
        )
        qs, qw = Y[ev, 0], Y[ev, 1]
        row: dict[str, float] = {}
        for cs in C_STRONG:
            for cw in C_WEAK:
                for k, w in KNN:
                    vs = ps[cs] if w == 0 else (1 - w) * ps[cs] + w * kn[:, 0]
                    vw = pw[cw] if w == 0 else (1 - w) * pw[cw] + w * kn[:, 1]
                    row[f"Cs={cs} Cw={cw} kNN={k},{w}"] = _apgr(vs - vw, qs, qw)
            # threshold reference (strong constant)
        for cw in C_WEAK:
            row[f"threshold Cw={cw}"] = _apgr(1 - pw[cw], qs, qw)
        res[name] = row
        print(f"{name}: {len(ev)} held out, {time.time() - t1:.0f} s", flush=True)
    print("\ncriterion = (val + mean LOSO)/2 | val | LOSO g, m | task-CV mean | per fold")
    rows = []
    for key in res["val"]:
        crit = (res["val"][key] + (res["loso_gsm8k"][key] + res["loso_mmlu"][key]) / 2) / 2
        tcv = [res[f"task{f}"][key] for f in range(5)]
        rows.append((crit, key, float(np.mean(tcv)), tcv))
    for crit, key, tm, tcv in sorted(rows, key=lambda r: -r[0]):
        print(f"{crit:.4f} | {key} | {res['val'][key]:.4f} | {res['loso_gsm8k'][key]:.4f}, "
              f"{res['loso_mmlu'][key]:.4f} | {tm:.4f} | " + " ".join(f"{x:.3f}" for x in tcv))
    out = Path(os.environ.get("OUT", "build/router-mode-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "permodel_c.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
