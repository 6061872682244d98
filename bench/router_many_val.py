"""Validation-only many-model (llmrouter) variants: kNN evidence and per-model calibration.

    PYTHONPATH=src python bench/router_many_val.py [TAG]

Train split of llmrouter only (IDF on those prompts), the selected multi-task option
(C = 0.5, shared_scale = 2), fit on train minus the 20 % carve-out (``train._is_val``),
scored on the carve-out: quality of the predicted-best model, the best point of the
``choose(lam=...)`` sweep at <= the best single model's cost (delta) and AIQ.  Calibration
(Platt: ``sigmoid(a * logit(p) + b)`` per model) is cross-fitted on the carve-out (2 folds by
hash), so no prompt is scored by a calibration fitted on it.  Never reads a test split.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from tierline.routing.learned import metrics as M
from tierline.routing.learned.data import default_data_dir, load_models_json, load_outcomes
from tierline.routing.learned.evaluate import _sweep, cost_matrix, quality_matrix
from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.model import dequantise_unit, knn_means, quantise_unit
from tierline.routing.learned.train import _fit_group, _is_val, build_matrix


def _platt(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Fit a, b of sigmoid(a * logit(p) + b) to soft labels y (Newton, tiny L2)."""
    x = np.log(np.clip(p, 1e-4, 1 - 1e-4) / (1 - np.clip(p, 1e-4, 1 - 1e-4)))
    A = np.stack([x, np.ones_like(x)], 1)
    w = np.array([1.0, 0.0])
    for _ in range(50):
        q = 1 / (1 + np.exp(-(A @ w)))
        g = A.T @ (q - y) + 1e-3 * w
        H = (A * (q * (1 - q))[:, None]).T @ A + 1e-3 * np.eye(2)
        w -= np.linalg.solve(H, g)
    return float(w[0]), float(w[1])


def _apply(p: np.ndarray, ab: tuple[float, float]) -> np.ndarray:
    x = np.log(np.clip(p, 1e-4, 1 - 1e-4) / (1 - np.clip(p, 1e-4, 1 - 1e-4)))
    out: np.ndarray = 1 / (1 + np.exp(-(ab[0] * x + ab[1])))
    return out


def _sweep_loss(P: np.ndarray, C: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gateway's default knob: per prompt the cheapest model predicted within d of the
    best, for d in [0, 1]."""
    costs, quals = [], []
    r = np.arange(len(P))
    for d in np.concatenate([np.linspace(0, 0.2, 101), np.linspace(0.21, 1.0, 80)]):
        ok = P.max(axis=1, keepdims=True) - d <= P
        pick = np.argmin(np.where(ok, C, np.inf), axis=1)
        costs.append(float(C[r, pick].sum()))
        quals.append(float(Q[r, pick].mean()))
    return np.array(costs), np.array(quals)


def main() -> None:
    tag = sys.argv[1] if len(sys.argv) > 1 else "many"
    data = Path(os.environ.get("TIERLINE_ROUTING_DATA") or default_data_dir())
    ex = load_outcomes([data / "llmrouter.jsonl"], split="train")
    texts = [e.text for e in ex]
    feat = Featurizer(FeatureConfig(bits=17))
    feat.fit_idf(texts)
    X = build_matrix(feat, texts).tocsr()
    S = quantise_unit(X[:, feat.hash_dim :].toarray())
    models = sorted({m for e in ex for m in e.outcomes})
    val = np.array([_is_val(t) for t in texts])
    tr, va = np.nonzero(~val)[0], np.nonzero(val)[0]
    f = _fit_group(X[tr], [ex[i] for i in tr], models, 0.5, 2.0)
    vex = [ex[i] for i in va]
    prices = load_models_json(data / "models.json")
    C = cost_matrix(vex, models, prices)
    order = np.argsort(C.mean(axis=0), kind="stable")
    models = [models[j] for j in order]
    C = C[:, order]
    Q = quality_matrix(vex, models)
    P0 = np.stack([1 / (1 + np.exp(-(X[va] @ f[m][0] + f[m][1]))) for m in models], 1)
    Ytr = np.array([[ex[i].outcomes[m].score for m in models] for i in tr], np.float32)
    V, Qv = dequantise_unit(S[tr]), dequantise_unit(S[va])
    fold = np.array([int(_is_val(t + "#fold")) for t in (texts[i] for i in va)])
    sc = np.array([C[:, j].sum() for j in range(len(models))])
    sq = Q.mean(axis=0)
    best = int(np.argmax(sq))
    c_min, c_max = float(sc.min()), float(sc.max())
    res: dict[str, dict[str, float]] = {}

    def score(name: str, P: np.ndarray) -> None:
        for knob, (rc, rq) in (("lam", _sweep(P, C, Q, float(C.mean()))),
                               ("max_loss", _sweep_loss(P, C, Q))):
            ok = rc <= sc[best] * (1 + 1e-9)
            res[name if knob == "lam" else f"{name} [max_loss sweep]"] = {
                "argmax_quality": float(Q[np.arange(len(P)), np.argmax(P, 1)].mean()),
                "delta": float(rq[ok].max() - sq[best]) if ok.any() else float("nan"),
                "aiq": M.aiq(rc, rq, c_min, c_max),
            }

    def calibrated(P: np.ndarray) -> np.ndarray:
        out = P.copy()
        for j in range(P.shape[1]):
            for k in (0, 1):
                fit, app = fold != k, fold == k
                out[app, j] = _apply(P[app, j], _platt(P[fit, j], Q[fit, j]))
        return out

    score("linear", P0)
    score("linear+platt", calibrated(P0))
    for k in (50, 100, 200, 400):
        Mk = np.concatenate(
            [knn_means(V, Ytr, Qv[s : s + 512].T, k) for s in range(0, len(va), 512)]
        )
        score(f"knn{k} only", Mk)
        for w in (0.15, 0.25, 0.35, 0.5):
            P = (1 - w) * P0 + w * Mk
            score(f"knn{k} w{w}", P)
            score(f"knn{k} w{w}+platt", calibrated(P))
    print(f"single best {models[best]} quality {sq[best]:.4f}; n_val {len(va)}")
    print("variant | argmax quality | delta at <= best single cost | AIQ")
    for name, r in res.items():
        print(f"{name} | {r['argmax_quality']:.4f} | {r['delta']:+.4f} | {r['aiq']:.4f}")
    out = Path(os.environ.get("OUT", "build/router-many-val"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
