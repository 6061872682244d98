"""Validation-only: a small non-linear (MLP) correction on the dense features (RouteLLM pair).

    PYTHONPATH=src python bench/router_mlp_val.py

RouteLLM MMLU + GSM8K train only, option (1, 0) (the pair-only router's). An sklearn
``MLPRegressor`` (one hidden layer, L2 ``alpha``, early stopping, ``random_state=0``) on the
64-d static embedding + the 8 standardised shape features predicts both models' scores; its
predicted gain is mixed into the linear gain (weight w), alone or together with the kNN
evidence (k = 100, weight 0.25).  Validation carve-out + LOSO, never a test split.
"""

from __future__ import annotations

import warnings

import numpy as np
from router_mode_val import PAIR  # bench/ is on sys.path when run as a script

from tierline.routing.learned.data import default_data_dir, load_outcomes
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.metrics import apgr_of as _apgr
from tierline.routing.learned.model import dequantise_unit, quantise_unit
from tierline.routing.learned.train import _fit_group, _is_val, build_matrix

CONFIGS = ((16, 1e-2), (32, 1e-1), (32, 1.0), (32, 3.0), (32, 10.0), (64, 3.0))


def main() -> None:
    from sklearn.neural_network import MLPRegressor  # type: ignore[import-untyped, unused-ignore]

    warnings.filterwarnings("ignore")
    data = default_data_dir()
    ex = load_outcomes(
        [data / "routellm-mmlu.jsonl", data / "routellm-gsm8k.jsonl"], split="train"
    )
    texts = [e.text for e in ex]
    feat = Featurizer(FeatureConfig(bits=17))
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    S = dequantise_unit(quantise_unit(X[:, feat.hash_dim :].toarray()))
    SH = np.stack([Featurizer.shape_features(t) for t in texts])
    SH = (SH - SH.mean(0)) / (SH.std(0) + 1e-6)
    F = np.hstack([S * 8.0, SH])
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
        idx = np.argpartition(-(S[ev] @ S[tr].T), 99, axis=1)[:, :100]
        kn = (Y[tr, 0] - Y[tr, 1])[idx].mean(1)
        qs, qw = Y[ev, 0], Y[ev, 1]
        lin = ps - pw
        row = {"off": _apgr(lin, qs, qw), "knn100 w0.25": _apgr(0.75 * lin + 0.25 * kn, qs, qw)}
        for h, alpha in CONFIGS:
            m = MLPRegressor(
                hidden_layer_sizes=(h,),
                alpha=alpha,
                max_iter=200,
                early_stopping=True,
                random_state=0,
            )
            m.fit(F[tr], Y[tr])
            pm = m.predict(F[ev])
            mg = pm[:, 0] - pm[:, 1]
            tag = f"mlp{h} alpha{alpha}"
            row[f"{tag} alone"] = _apgr(mg, qs, qw)
            for w in (0.25, 0.35):
                row[f"{tag} w{w}"] = _apgr((1 - w) * lin + w * mg, qs, qw)
                row[f"{tag} w{w} + knn0.25"] = _apgr(
                    (0.75 - w) * lin + w * mg + 0.25 * kn, qs, qw
                )
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
