"""Validation-only comparison of feature options (static MiniLM-distilled embeddings on/off).

    PYTHONPATH=src python bench/router_static_val.py DIMS WEIGHT TAG   # DIMS=0: current features
    SE=/tmp/se128.npz PYTHONPATH=src python bench/router_static_val.py 64 4 TAG  # other table
    BITS=17 ...   # hash buckets (default 18 = FeatureConfig's; the CLI / shipped router use 17)

Train splits of routellm-mmlu / -gsm8k / llmrouter only; fit = independent L2 logistic
regression per model (C = 1) on the train part of the 20 % hash carve-out (``train._is_val``);
scores on the carve-out: mean pairwise APGR (RouteLLM pair), APGR per source, quality of the
predicted-best llmrouter model, llmrouter best point at <= best single's cost (delta), AIQ,
and leave-one-source-out APGR (MMLU <-> GSM8K).  Never reads a test split.  Prints one JSON
line and writes it to ``$OUT/TAG.json`` (default ``build/router-static-val``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from tierline.routing.learned.data import default_data_dir, load_models_json, load_outcomes
from tierline.routing.learned.evaluate import many_model_eval, two_model_eval
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.model import LearnedRouter
from tierline.routing.learned.static_embed import StaticEmbedder
from tierline.routing.learned.train import (
    _fit_group,
    _group_metric,
    _groups,
    _is_val,
    build_matrix,
)

PAIR = ["gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"]
SOURCES = ("routellm-mmlu.jsonl", "routellm-gsm8k.jsonl", "llmrouter.jsonl")


def main() -> None:
    dims, w, tag = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes([data / s for s in SOURCES], split="train")
    texts = [e.text for e in ex]
    bits = int(os.environ.get("BITS", "18"))
    cfg = FeatureConfig(bits=bits, static_dims=dims, static_weight=w)
    se = StaticEmbedder.load(os.environ.get("SE") or None) if dims else None
    feat = Featurizer(cfg, static=se)
    t0 = time.time()
    feat.fit_idf(texts)
    X = build_matrix(feat, texts)
    print(tag, "featurised in", round(time.time() - t0, 1), "s", flush=True)
    val = np.array([_is_val(x) for x in texts])
    tr, va = np.nonzero(~val)[0], np.nonzero(val)[0]
    trex, vaex = [ex[i] for i in tr], [ex[i] for i in va]
    counts: dict[str, int] = {}
    for e in ex:
        for m in e.outcomes:
            counts[m] = counts.get(m, 0) + 1
    kept = sorted(m for m, c in counts.items() if c >= 20)
    fitted: dict[str, tuple[np.ndarray, float]] = {}
    res: dict[str, object] = {"tag": tag, "dims": dims, "w": w, "bits": bits}
    for g in _groups(ex, kept):
        f = _fit_group(X[tr], trex, g, 1.0, 0.0)
        gi = np.nonzero([any(m in e.outcomes for m in g) for e in vaex])[0]
        res[f"group{len(g)}"] = _group_metric([vaex[i] for i in gi], X[va][gi], f)
        fitted.update(f)
    enc = np.stack([fitted[m][0] for m in kept], 1)
    bias = np.array([fitted[m][1] for m in kept], np.float32)
    r = LearnedRouter(feat, enc, bias, kept)
    prices = load_models_json()
    for src in ("routellm-mmlu", "routellm-gsm8k"):
        vv = [e for e in vaex if e.source == src]
        res[src] = two_model_eval(r, vv, PAIR[0], PAIR[1], prices)["apgr"]
    lm = [e for e in vaex if e.source == "llmrouter"]
    models = sorted({m for e in lm for m in e.outcomes})
    lm = [e for e in lm if all(m in e.outcomes for m in models)]
    mm = many_model_eval(r, lm, models, prices)
    res["llm_delta_best_single"] = mm["delta_vs_best_single"]
    res["llm_aiq"] = mm["aiq"]
    res["n_llm_val"] = len(lm)
    src_arr = np.array([e.source for e in ex])
    in_pair = np.array([all(m in e.outcomes for m in PAIR) for e in ex])
    loso = []
    for held in ("routellm-mmlu", "routellm-gsm8k"):
        a = np.nonzero(in_pair & (src_arr != held))[0]
        b = np.nonzero(in_pair & (src_arr == held))[0]
        f = _fit_group(X[a], [ex[i] for i in a], PAIR, 1.0, 0.0)
        loso.append(_group_metric([ex[i] for i in b], X[b], f))
    res["loso"] = loso
    print(json.dumps(res), flush=True)
    out = Path(os.environ.get("OUT", "build/router-static-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
