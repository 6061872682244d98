"""``LearnedRouter``: per-model P(good answer) from a prompt, plus the cost-quality chooser.

Model (factorised, "prompt representation x per-model vector"):

* ``z(x) = E^T phi(x) + c`` - a ``k``-dim prompt representation; ``phi`` is the hashed n-gram
  vector of :mod:`.features` and the columns of ``E`` are L2-regularised logistic regressions
  learnt for the ``k`` base models of the training data (so ``z`` is the vector of their
  logits; it is frozen once trained).
* ``P(good | x, m) = sigmoid(u_m . z(x) + b_m)``.  For a base model ``u_m`` is its unit vector;
  :meth:`LearnedRouter.add_profile` fits ``u_m, b_m`` of a new model on a few hundred labelled
  prompts without touching ``E`` or the other profiles.

Only numpy is needed at run time.  The file format is a single ``.npz``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .choose import choose
from .features import FeatureConfig, Featurizer

__all__ = ["LearnedRouter", "choose", "default_router_path"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
FORMAT_VERSION = 1


def default_router_path() -> Path:
    """Path of the router shipped inside the package."""
    return Path(str(resources.files("tierline.routing.learned") / "default_router.npz"))


def _sigmoid(x: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))
    return out


class LearnedRouter:
    """Predicts P(good answer) of every known model profile for a prompt."""

    def __init__(
        self,
        featurizer: Featurizer,
        encoder: F32,
        encoder_bias: F32,
        base_models: Sequence[str],
        heads: dict[str, tuple[F64, float]] | None = None,
        meta: dict[str, object] | None = None,
    ) -> None:
        if encoder.shape != (featurizer.dim, len(base_models)):
            raise ValueError("encoder shape does not match featurizer / base models")
        self.featurizer = featurizer
        self.encoder = np.ascontiguousarray(encoder, dtype=np.float32)
        self.encoder_bias = np.asarray(encoder_bias, dtype=np.float32)
        self.base_models = list(base_models)
        k = len(self.base_models)
        self._heads: dict[str, tuple[F64, float]] = {}
        for i, m in enumerate(self.base_models):
            self._heads[m] = (np.eye(k, dtype=np.float64)[i], 0.0)
        for name, (u, b) in (heads or {}).items():
            self._heads[name] = (np.asarray(u, dtype=np.float64), float(b))
        self.meta: dict[str, object] = dict(meta or {})
        self._refresh()

    def _refresh(self) -> None:
        self._names = list(self._heads)
        self._U = np.stack([self._heads[n][0] for n in self._names])
        self._b = np.array([self._heads[n][1] for n in self._names], dtype=np.float64)

    # -- inference -------------------------------------------------------------------
    @property
    def profiles(self) -> list[str]:
        """Names of the models this router knows."""
        return list(self._names)

    def encode(self, text: str) -> F64:
        """Frozen prompt representation ``z(x)`` (k floats)."""
        idx, val = self.featurizer.transform(text)
        z = val @ self.encoder[idx] if len(idx) else np.zeros(len(self.base_models), np.float32)
        return (z + self.encoder_bias).astype(np.float64)

    def encode_many(self, texts: Sequence[str]) -> F64:
        """``z`` for several prompts, shape (n, k)."""
        if not texts:
            return np.zeros((0, len(self.base_models)))
        return np.stack([self.encode(t) for t in texts])

    def predict(self, text: str) -> dict[str, float]:
        """P(good answer) per profile for one prompt."""
        p = _sigmoid(self._U @ self.encode(text) + self._b)
        return {n: float(v) for n, v in zip(self._names, p, strict=True)}

    def predict_many(self, texts: Sequence[str]) -> F64:
        """P(good answer), shape (n_texts, n_profiles), columns in :attr:`profiles` order."""
        z = self.encode_many(texts)
        return _sigmoid(z @ self._U.T + self._b)

    # -- new models --------------------------------------------------------------------
    def add_profile(
        self,
        name: str,
        texts: Sequence[str],
        scores: Sequence[float],
        *,
        l2: float = 1.0,
        iters: int = 50,
    ) -> None:
        """Fit a new (or replace an added) profile on frozen prompt features.

        Logistic regression on ``z(x)`` with soft labels ``scores`` in [0, 1] and an L2 penalty
        ``l2`` (Newton's method); nothing else in the router changes.
        """
        if name in self.base_models:
            raise ValueError(f"{name!r} is a base model of this router; cannot replace it")
        y = np.asarray(scores, dtype=np.float64)
        if len(texts) != len(y) or len(y) == 0:
            raise ValueError("texts and scores must be non-empty and of equal length")
        if np.any((y < 0) | (y > 1)):
            raise ValueError("scores must be in [0, 1]")
        z = self.encode_many(texts)
        n, k = z.shape
        A = np.hstack([z, np.ones((n, 1))])
        w = np.zeros(k + 1)
        prior = np.mean(y).clip(1e-3, 1 - 1e-3)
        w[-1] = np.log(prior / (1 - prior))
        reg = np.full(k + 1, l2)
        reg[-1] = 1e-6
        for _ in range(iters):
            p = _sigmoid(A @ w)
            grad = A.T @ (p - y) + reg * w
            H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(reg)
            step = np.linalg.solve(H, grad)
            w -= step
            if float(np.max(np.abs(step))) < 1e-8:
                break
        self._heads[name] = (w[:k].copy(), float(w[-1]))
        self._refresh()

    # -- persistence -------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the router to one ``.npz`` file (float16 encoder)."""
        cfg = self.featurizer.config
        header = {
            "format": FORMAT_VERSION,
            "feature_config": {
                "bits": cfg.bits,
                "char_ngrams": list(cfg.char_ngrams),
                "word_bigrams": cfg.word_bigrams,
                "max_chars": cfg.max_chars,
                "char_weight": cfg.char_weight,
                "word_weight": cfg.word_weight,
                "shape_weight": cfg.shape_weight,
                "static_dims": cfg.static_dims,
                "static_weight": cfg.static_weight,
            },
            "base_models": self.base_models,
            "added": [n for n in self._names if n not in self.base_models],
            "meta": self.meta,
        }
        added = header["added"]
        assert isinstance(added, list)
        idf = self.featurizer.idf
        with Path(path).open("wb") as fh:
            np.savez_compressed(
                fh,
                header=np.array(json.dumps(header)),
                idf=(idf if idf is not None else np.ones(self.featurizer.dim)).astype(np.float16),
                encoder=self.encoder.astype(np.float16),
                encoder_bias=self.encoder_bias,
                head_u=np.array([self._heads[n][0] for n in added], dtype=np.float64).reshape(
                    len(added), len(self.base_models)
                ),
                head_b=np.array([self._heads[n][1] for n in added], dtype=np.float64),
            )

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouter:
        """Read a router written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            if header.get("format") != FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported router format {header.get('format')}")
            fc = header["feature_config"]
            cfg = FeatureConfig(
                bits=int(fc["bits"]),
                char_ngrams=tuple(int(n) for n in fc["char_ngrams"]),
                word_bigrams=bool(fc["word_bigrams"]),
                max_chars=int(fc["max_chars"]),
                char_weight=float(fc["char_weight"]),
                word_weight=float(fc["word_weight"]),
                shape_weight=float(fc["shape_weight"]),
                static_dims=int(fc.get("static_dims", 0)),
                static_weight=float(fc.get("static_weight", 0.0)),
            )
            feat = Featurizer(cfg, idf=z["idf"].astype(np.float32))
            heads = {
                n: (z["head_u"][i].astype(np.float64), float(z["head_b"][i]))
                for i, n in enumerate(header["added"])
            }
            return cls(
                feat,
                z["encoder"].astype(np.float32),
                z["encoder_bias"].astype(np.float32),
                header["base_models"],
                heads,
                header.get("meta") or {},
            )
