"""Gain vs threshold by how close the strong model is to its ceiling (llmrouter train only).

    PYTHONPATH=src python bench/router_ceiling_val.py

MT-Bench - the one held-out set that prefers the threshold score (1 - P_weak) over the gain
score (P_strong - P_weak) - is a set on which GPT-4 almost never fails (mean 0.93).  Is that
the regime where threshold wins?  Leave one llmrouter task family out (independent fits of
the nine models on the other 13 families), and for every model pair with a quality gap >=
0.05 on the held-out family record the strong model's mean quality there and the APGR of both
scores; then compare the scores by bucket of the strong model's mean.  The bucket is an
analysis of outcomes, not something a router could see; never reads a test split.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from tierline.routing.learned.data import default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.train import _fit_group, build_matrix

BUCKETS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 1.01))


def main() -> None:
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes([data / "llmrouter.jsonl"], split="train")
    texts = [e.text for e in ex]
    models = sorted({m for e in ex for m in e.outcomes})
    fam = np.array([e.task.split("/")[0] for e in ex])
    Y = np.array([[e.outcomes[m].score for m in models] for e in ex], np.float64)
    feat = Featurizer(FeatureConfig(bits=17))
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    cells: list[dict[str, float | str]] = []
    for f in sorted(set(fam)):
        t0 = time.time()
        tr, ev = np.nonzero(fam != f)[0], np.nonzero(fam == f)[0]
        fits = _fit_group(X[tr], [ex[i] for i in tr], models, 1.0, 0.0)
        P = np.stack([1 / (1 + np.exp(-(X[ev] @ fits[m][0] + fits[m][1]))) for m in models], 1)
        for i in range(len(models)):
            for j in range(len(models)):
                qs, qw = Y[ev, i], Y[ev, j]
                if qs.mean() - qw.mean() < 0.05:
                    continue
                cells.append({
                    "family": f, "strong": models[i], "weak": models[j],
                    "strong_mean": float(qs.mean()), "weak_mean": float(qw.mean()),
                    "gain": _apgr(P[:, i] - P[:, j], qs, qw),
                    "threshold": _apgr(-P[:, j], qs, qw),
                })
        print(f"held {f}: {len(ev)} prompts, {time.time() - t0:.0f} s", flush=True)
    print("\nstrong model's mean quality on the held-out family | cells | families | "
          "gain APGR | threshold APGR | cells where threshold wins")
    for lo, hi in BUCKETS:
        sel = [c for c in cells if lo <= float(c["strong_mean"]) < hi]
        if not sel:
            continue
        g = np.mean([float(c["gain"]) for c in sel])
        t = np.mean([float(c["threshold"]) for c in sel])
        wins = np.mean([float(c["threshold"]) > float(c["gain"]) for c in sel])
        print(f"[{lo:.2f}, {min(hi, 1.0):.2f}) | {len(sel)} | {len({c['family'] for c in sel})} "
              f"| {g:.4f} | {t:.4f} | {wins:.0%}")
    out = Path(os.environ.get("OUT", "build/router-mode-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.json").write_text(json.dumps(cells, indent=1))


if __name__ == "__main__":
    main()
