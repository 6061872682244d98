"""``LearnedRouter``: per-model P(good answer) from a prompt, plus the cost-quality chooser.

Model (factorised, "prompt representation x per-model vector"):

* ``z(x) = E^T phi(x) + c`` - a ``k``-dim prompt representation; ``phi`` is the hashed n-gram
  vector of :mod:`.features` and the columns of ``E`` are L2-regularised logistic regressions
  learnt for the ``k`` base models of the training data (so ``z`` is the vector of their
  logits; it is frozen once trained).
* ``P(good | x, m) = sigmoid(u_m . z(x) + b_m)``.  For a base model ``u_m`` is its unit vector;
  :meth:`LearnedRouter.add_profile` fits ``u_m, b_m`` of a new model on a few hundred labelled
  prompts without touching ``E`` or the other profiles.
* Optional local evidence (:class:`KnnGroup`, chosen per model group at training time): for
  the base models of a group, ``P = (1 - w) * sigmoid(...) + w * mean score of the k training
  prompts nearest to x`` (cosine of the static-embedding part of ``phi``, int8-stored unit
  vectors).  Added profiles use the linear part only.

Only numpy is needed at run time.  The file format is a single ``.npz``.
"""

from __future__ import annotations

import itertools
import json
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .choose import choose
from .data import MIN_PROFILE_PROMPTS
from .features import FeatureConfig, Featurizer

__all__ = [
    "KnnGroup",
    "LearnedRouter",
    "RouterFileError",
    "choose",
    "default_router_path",
    "dequantise_unit",
    "knn_means",
    "quantise_unit",
    "read_profiles",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
FORMAT_VERSION = 1


def default_router_path() -> Path:
    """Path of the router shipped inside the package."""
    return Path(str(resources.files("tierline.routing.learned") / "default_router.npz"))


class RouterFileError(ValueError):
    """A router file is missing, unreadable, or not a router written by ``save``."""


@contextmanager
def _open_router(path: str | Path) -> Iterator[Any]:
    """The ``NpzFile`` of a router file and its parsed JSON header (lazily read arrays);
    every way of not being a router becomes one :class:`RouterFileError` line."""
    p = Path(path)
    if not p.is_file():
        raise RouterFileError(f"router file {p} does not exist" if not p.exists()
                              else f"router file {p} is not a file")
    not_router = f"{p} is not a tierline router file (an .npz written by `tierline router train`)"
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RouterFileError(not_router) from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise RouterFileError(not_router)
    with z:
        try:
            header = json.loads(str(z["header"]))
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
            raise RouterFileError(not_router) from e
        if not isinstance(header, dict):
            raise RouterFileError(not_router)
        if header.get("format") != FORMAT_VERSION:
            raise RouterFileError(f"{p}: unsupported router format {header.get('format')!r}")
        yield z, header


def read_profiles(path: str | Path) -> list[str]:
    """The profiles of a router file, from its header only (cheap: no array is loaded)."""
    with _open_router(path) as (_, header):
        try:
            return [str(m) for m in (*header["base_models"], *header.get("added", []))]
        except (KeyError, TypeError) as e:
            raise RouterFileError(f"{path}: damaged router header (no {e})") from e


def _check_profile_data(name: str, y: F64, min_prompts: int) -> None:
    if len(y) < min_prompts:
        raise ValueError(f"{name!r} has outcomes on {len(y)} prompts; a profile needs at least "
                         f"{min_prompts} (a few hundred are better)")
    good = int(np.sum(y >= 0.5))
    if good == 0 or good == len(y):
        what = "good" if good else "bad"
        raise ValueError(f"every outcome of {name!r} is {what} (score {'>=' if good else '<'} "
                         f"0.5): a profile needs prompts with good and with bad answers")


def quantise_unit(v: npt.NDArray[np.floating]) -> npt.NDArray[np.int8]:
    """Rows of ``v`` L2-normalised and stored as int8 (x 127); zero rows stay zero."""
    a = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    q: npt.NDArray[np.int8] = np.round(a / np.maximum(n, 1e-12) * 127.0).astype(np.int8)
    return q


def dequantise_unit(q: npt.NDArray[np.int8]) -> F32:
    """int8 rows of :func:`quantise_unit` back to unit float32 rows."""
    a = q.astype(np.float32)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    out: F32 = a / np.maximum(n, np.float32(1e-12))
    return out


@dataclass
class KnnGroup:
    """Nearest-neighbour evidence for the base models ``models`` of one training group.

    ``vecs`` (n, static_dims) int8 unit vectors of the group's training prompts (see
    :func:`quantise_unit`), ``scores`` (n, len(models)) their outcomes; a prediction uses the
    mean score of the ``k`` most cosine-similar prompts with weight ``weight``.
    """

    models: list[str]
    k: int
    weight: float
    vecs: npt.NDArray[np.int8]
    scores: F32


def knn_means(V: F32, scores: F32, q: F32, k: int) -> F32:
    """Mean of ``scores`` (n, c) over the ``k`` rows of ``V`` (n, d) most similar to each
    column of ``q`` (d, m); shape (m, c)."""
    sims = V @ q  # (n, m)
    k = min(k, len(V))
    if k >= len(V):
        out: F32 = np.broadcast_to(scores.mean(axis=0), (q.shape[1], scores.shape[1])).copy()
        return out
    idx = np.argpartition(-sims, k - 1, axis=0)[:k]  # (k, m)
    out = scores[idx].mean(axis=0).astype(np.float32)  # (m, c)
    return out


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
        knn: Sequence[KnnGroup] | None = None,
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
        self.knn: list[KnnGroup] = list(knn or [])
        d = featurizer.config.static_dims
        self._knn: list[tuple[F32, F32, list[int], int, float]] = []
        for g in self.knn:
            if g.vecs.ndim != 2 or g.vecs.shape[1] != d or d == 0:
                raise ValueError("kNN vectors do not match the static embedding dims")
            if g.scores.shape != (len(g.vecs), len(g.models)):
                raise ValueError("kNN scores shape does not match its vectors / models")
            if any(m not in self.base_models for m in g.models) or g.k < 1:
                raise ValueError("kNN group models must be base models, k >= 1")
            cols = [self.base_models.index(m) for m in g.models]
            V = dequantise_unit(g.vecs)
            self._knn.append((V, g.scores.astype(np.float32), cols, g.k, float(g.weight)))
        ends = np.cumsum([0] + [len(t[0]) for t in self._knn])
        self._knn_spans = [(int(a), int(b)) for a, b in itertools.pairwise(ends)]
        self._knn_all: F32 = np.ascontiguousarray(
            np.concatenate([t[0] for t in self._knn]) if self._knn else np.zeros((0, d), np.float32)
        )
        # each group's vectors become a view of the concatenation: one float32 copy in memory
        self._knn = [(self._knn_all[a:b], sc, cols, k, w)
                     for (_, sc, cols, k, w), (a, b) in zip(self._knn, self._knn_spans,
                                                           strict=True)]
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

    def _z(self, idx: npt.NDArray[np.int64], val: F32) -> F64:
        z = val @ self.encoder[idx] if len(idx) else np.zeros(len(self.base_models), np.float32)
        return (z + self.encoder_bias).astype(np.float64)

    def _static(self, idx: npt.NDArray[np.int64], val: F32) -> F32 | None:
        """Unit static-embedding part of a feature vector (``None`` if absent)."""
        h = self.featurizer.hash_dim
        mask = idx >= h
        if not mask.any():
            return None
        s = np.zeros(self.featurizer.config.static_dims, np.float32)
        s[idx[mask] - h] = val[mask]
        n = float(np.sqrt(s @ s))
        if n <= 0.0:
            return None
        out: F32 = s / np.float32(n)
        return out

    def _blend(self, P: F64, S: list[F32 | None]) -> F64:
        """Mix the kNN evidence into the base models' columns of ``P`` (n, profiles)."""
        if not self._knn:
            return P
        rows = [i for i, s in enumerate(S) if s is not None]
        if not rows:
            return P
        Q = np.stack([s for s in S if s is not None], axis=1).astype(np.float32)  # (d, m)
        if len(rows) == 1:  # one prompt (the gateway's case): one matrix-vector product
            sims = self._knn_all @ Q[:, 0]
            for (_, scores, cols, k, w), (a, b) in zip(self._knn, self._knn_spans, strict=True):
                sg = sims[a:b]
                kk = min(k, len(sg))
                top = np.argpartition(-sg, kk - 1)[:kk] if kk < len(sg) else np.arange(len(sg))
                r0 = rows[0]
                P[r0, cols] = (1.0 - w) * P[r0, cols] + w * scores[top].mean(axis=0)
            return P
        for V, scores, cols, k, w in self._knn:
            for s0 in range(0, Q.shape[1], 256):
                r = rows[s0 : s0 + 256]
                M = knn_means(V, scores, Q[:, s0 : s0 + 256], k)
                sub = P[np.ix_(r, cols)]
                P[np.ix_(r, cols)] = (1.0 - w) * sub + w * M
        return P

    def encode(self, text: str) -> F64:
        """Frozen prompt representation ``z(x)`` (k floats)."""
        idx, val = self.featurizer.transform(text)
        return self._z(idx, val)

    def encode_many(self, texts: Sequence[str]) -> F64:
        """``z`` for several prompts, shape (n, k)."""
        if not texts:
            return np.zeros((0, len(self.base_models)))
        return np.stack([self.encode(t) for t in texts])

    def predict(self, text: str) -> dict[str, float]:
        """P(good answer) per profile for one prompt."""
        idx, val = self.featurizer.transform(text)
        P = _sigmoid(self._U @ self._z(idx, val) + self._b)[None, :]
        if self._knn:
            P = self._blend(P, [self._static(idx, val)])
        return dict(zip(self._names, P[0].tolist(), strict=True))

    def predict_many(self, texts: Sequence[str]) -> F64:
        """P(good answer), shape (n_texts, n_profiles), columns in :attr:`profiles` order."""
        if not texts:
            return np.zeros((0, len(self._names)))
        zs: list[F64] = []
        ss: list[F32 | None] = []
        for t in texts:
            idx, val = self.featurizer.transform(t)
            zs.append(self._z(idx, val))
            ss.append(self._static(idx, val) if self._knn else None)
        P = _sigmoid(np.stack(zs) @ self._U.T + self._b)
        return self._blend(P, ss)

    # -- new models --------------------------------------------------------------------
    def add_profile(
        self,
        name: str,
        texts: Sequence[str],
        scores: Sequence[float],
        *,
        l2: float = 1.0,
        iters: int = 50,
        min_prompts: int = MIN_PROFILE_PROMPTS,
    ) -> None:
        """Fit a new (or replace an added) profile on frozen prompt features.

        Logistic regression on ``z(x)`` with soft labels ``scores`` in [0, 1] and an L2 penalty
        ``l2`` (Newton's method); nothing else in the router changes. It needs at least
        ``min_prompts`` prompts, with good (score >= 0.5) and bad answers among them: from a
        handful, or from one outcome only, the fit predicts that outcome everywhere.
        """
        if name in self.base_models:
            raise ValueError(f"{name!r} is a base model of this router; cannot replace it")
        y = np.asarray(scores, dtype=np.float64)
        if len(texts) != len(y) or len(y) == 0:
            raise ValueError("texts and scores must be non-empty and of equal length")
        if not np.all((y >= 0) & (y <= 1)):
            raise ValueError("scores must be in [0, 1]")
        _check_profile_data(name, y, min_prompts)
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
            "knn": [{"models": g.models, "k": g.k, "weight": g.weight} for g in self.knn],
        }
        added = header["added"]
        assert isinstance(added, list)
        idf = self.featurizer.idf
        knn_arrays: dict[str, Any] = {}
        for i, g in enumerate(self.knn):
            knn_arrays[f"knn_vecs_{i}"] = g.vecs.astype(np.int8)
            knn_arrays[f"knn_scores_{i}"] = g.scores.astype(np.float16)
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
                **knn_arrays,
            )

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouter:
        """Read a router written by :meth:`save` (:class:`RouterFileError` if it is not one)."""
        with _open_router(path) as (z, header):
            try:
                return cls._from_npz(z, header)
            except (KeyError, ValueError, TypeError, OSError, zipfile.BadZipFile) as e:
                raise RouterFileError(f"{path}: damaged router file ({e})") from e

    @classmethod
    def _from_npz(cls, z: Any, header: dict[str, Any]) -> LearnedRouter:
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
        knn = [
            KnnGroup(
                models=list(g["models"]),
                k=int(g["k"]),
                weight=float(g["weight"]),
                vecs=z[f"knn_vecs_{i}"].astype(np.int8),
                scores=z[f"knn_scores_{i}"].astype(np.float32),
            )
            for i, g in enumerate(header.get("knn") or [])
        ]
        return cls(
            feat,
            z["encoder"].astype(np.float32),
            z["encoder_bias"].astype(np.float32),
            header["base_models"],
            heads,
            header.get("meta") or {},
            knn,
        )
