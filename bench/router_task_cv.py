"""Leave-task-groups-out on the RouteLLM pair: routing unseen *mixtures* of tasks.

    PYTHONPATH=src python bench/router_task_cv.py [--folds 5]

``router_mixed_val.py`` showed on llmrouter that a pair routes unseen mixed traffic well above
chance (pooled APGR 0.615) while routing inside an unseen task is at chance: the signal that
generalises is *which kind of prompt* needs the strong model.  The pair's own selection
criterion (``train._select``) sees that only through a random carve-out (seen tasks) and
leave-one-source-out (one whole file, i.e. within-benchmark).  Here the pair's train data is
cut by task: MMLU's 57 subjects and GSM8K are dealt into ``--folds`` groups by a hash of the
task name; each group is held out as one unseen mixture and scored with RouteLLM APGR pooled
over it, for the regression options, the kNN grid and the scores ``alpha * P_s - P_w``.

Train splits only (contaminated lines dropped); never reads a test split; MT-Bench unused.
"""

from __future__ import annotations

import argparse
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
from tierline.routing.learned.train import _average, _fit_group, build_matrix

PAIR = ["gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"]
ALPHAS = (0.0, 0.5, 0.75, 1.0)
KNN = ((0, 0.0), (100, 0.25), (100, 0.35), (400, 0.35), (400, 0.5))


def _fold(task: str, n: int) -> int:
    return int(hashlib.sha256(task.encode()).hexdigest(), 16) % n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--options", nargs="+", default=["1,0", "1,0.5", "0.5,2"])
    ap.add_argument("--feature", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="override a FeatureConfig field, e.g. static_weight=8")
    a = ap.parse_args()
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes(
        [data / "routellm-mmlu.jsonl", data / "routellm-gsm8k.jsonl"], split="train"
    )
    texts = [e.text for e in ex]
    fold = np.array([_fold(e.task, a.folds) for e in ex])
    Y = np.array([[e.outcomes[m].score for m in PAIR] for e in ex], np.float32)
    over = {k: float(v) for k, v in (x.split("=") for x in a.feature)}
    feat = Featurizer(FeatureConfig(bits=17, **over))  # type: ignore[arg-type]
    t0 = time.time()
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    S = quantise_unit(X[:, feat.hash_dim :].toarray())
    print(f"featurised {len(texts)} prompts in {time.time() - t0:.0f} s; fold sizes "
          f"{np.bincount(fold).tolist()}; GSM8K in fold {_fold('gsm8k', a.folds)}", flush=True)
    opts = [tuple(float(x) for x in o.split(",")) for o in a.options]
    res: dict[str, list[float]] = {}
    for f in range(a.folds):
        t1 = time.time()
        tr, ev = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        tr_ex = [ex[i] for i in tr]
        fits = [_fit_group(X[tr], tr_ex, PAIR, c, s) for c, s in opts]
        named = [(f"C={c},s={s}", ft) for (c, s), ft in zip(opts, fits, strict=True)]
        named.append(("average", _average(fits)))
        V, Q = dequantise_unit(S[tr]), dequantise_unit(S[ev])
        kn = {
            k: np.concatenate(
                [knn_means(V, Y[tr], Q[r : r + 512].T, k) for r in range(0, len(Q), 512)]
            )
            for k in sorted({k for k, w in KNN if w > 0})
        }
        qs, qw = Y[ev, 0], Y[ev, 1]
        for name, ft in named:
            ps = 1 / (1 + np.exp(-(X[ev] @ ft[PAIR[0]][0] + ft[PAIR[0]][1])))
            pw = 1 / (1 + np.exp(-(X[ev] @ ft[PAIR[1]][0] + ft[PAIR[1]][1])))
            for k, w in KNN:
                vs = ps if w == 0 else (1 - w) * ps + w * kn[k][:, 0]
                vw = pw if w == 0 else (1 - w) * pw + w * kn[k][:, 1]
                for al in ALPHAS:
                    key = f"{name} kNN={k},{w} alpha={al}"
                    res.setdefault(key, []).append(_apgr(al * vs - vw, qs, qw))
        print(f"fold {f}: {len(ev)} held-out prompts, strong-weak gap "
              f"{qs.mean() - qw.mean():.3f}, {time.time() - t1:.0f} s", flush=True)
    print("\npooled APGR on held-out task mixtures (mean over folds) | per fold")
    for key, v in sorted(res.items(), key=lambda kv: -float(np.mean(kv[1]))):
        print(f"{key} | {np.mean(v):.4f} | " + " ".join(f"{x:.3f}" for x in v))
    out = Path(os.environ.get("OUT", "build/router-mode-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "task_cv.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
