"""Prompt featurisation: hashed word / char n-grams, numpy only, no network, no model hub.

A prompt becomes a sparse vector ``(indices, values)`` over ``2**bits`` hash buckets:

* word unigrams and bigrams (lower-cased ``\\w+`` tokens, punctuation tokens kept),
* byte n-grams (``char_ngrams``, default 3..5) of the lower-cased UTF-8 text,
* a few dense "shape" features (length, digits, maths symbols, lines, code markers) put in
  reserved buckets.

Counts are sub-linear (``log1p``), each group is L2-normalised, then multiplied by an IDF
vector learnt at training time (stored with the router).  Hashing is deterministic (CRC32 for
words, a multiplicative polynomial hash for byte n-grams): the same text always gives the same
vector in every process, unlike Python's salted ``hash``.

The text is cut to ``max_chars`` (head + tail) so the cost is bounded for huge prompts.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .static_embed import StaticEmbedder

__all__ = ["FeatureConfig", "Featurizer", "SparseVec"]

IntArr = npt.NDArray[np.int64]
FloatArr = npt.NDArray[np.float32]
SparseVec = tuple[IntArr, FloatArr]

_WORD_RE = re.compile(r"\w+|[^\w\s]")
_MUL = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(1099511628211)
N_SHAPE = 8
#: hash dimension 2**bits: below 2**10 everything collides, above 2**24 the encoder alone
#: (float32 x models) runs to gigabytes
MIN_BITS, MAX_BITS = 10, 24


@dataclass(frozen=True)
class FeatureConfig:
    """Hyper-parameters of :class:`Featurizer` (stored with the router)."""

    bits: int = 18
    char_ngrams: tuple[int, ...] = (3, 4, 5)
    word_bigrams: bool = True
    max_chars: int = 6000
    char_weight: float = 1.0
    word_weight: float = 1.0
    shape_weight: float = 0.5
    #: dims of the static MiniLM-distilled embedding (:mod:`.static_embed`) appended after
    #: the hash buckets (0 = off); the group is L2-normalised and scaled by ``static_weight``
    #: (64 / 4.0 picked on the validation carve-out of train, see docs/router-eval.md)
    static_dims: int = 64
    static_weight: float = 4.0

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS} "
                             f"(2**bits hash buckets; got {self.bits})")


_CRC_CACHE_MAX = 50_000  # ~5 MB at most; frequent words fill it first


class Featurizer:
    """Maps prompt text to a sparse hashed feature vector."""

    def __init__(
        self,
        config: FeatureConfig | None = None,
        idf: FloatArr | None = None,
        static: StaticEmbedder | None = None,
    ):
        self.config = config or FeatureConfig()
        self.hash_dim = 1 << self.config.bits
        self.dim = self.hash_dim + self.config.static_dims
        self.static: StaticEmbedder | None = None
        if self.config.static_dims:
            self.static = static if static is not None else StaticEmbedder.load()
            if self.static.dim < self.config.static_dims:
                raise ValueError("static embedding table has fewer dims than static_dims")
        self._shift = np.uint64(64 - self.config.bits)
        self._crc: dict[str, int] = {}  # word -> crc32 (words repeat across prompts)
        self.idf: FloatArr | None = idf

    # -- hashing -----------------------------------------------------------------------
    def _bucket(self, h: npt.NDArray[np.uint64]) -> IntArr:
        with np.errstate(over="ignore"):
            return ((h * _MUL) >> self._shift).astype(np.int64)

    def _word_ids(self, text: str) -> IntArr:
        toks = _WORD_RE.findall(text)
        if not toks:
            return np.zeros(0, dtype=np.int64)
        cache = self._crc
        get = cache.get
        hs = []
        for t in toks:
            v = get(t)
            if v is None:
                v = zlib.crc32(t.encode())
                if len(cache) < _CRC_CACHE_MAX:
                    cache[t] = v
            hs.append(v)
        h = np.array(hs, dtype=np.uint64)
        parts = [h]
        if self.config.word_bigrams and len(h) > 1:
            with np.errstate(over="ignore"):
                parts.append(h[:-1] * _BASE + h[1:] + np.uint64(0x5BD1E995))
        return self._bucket(np.concatenate(parts))

    def _char_ids(self, text: str) -> IntArr:
        b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
        out: list[npt.NDArray[np.uint64]] = []
        with np.errstate(over="ignore"):
            for n in self.config.char_ngrams:
                if len(b) < n:
                    continue
                m = len(b) - n + 1
                h = b[:m] + np.uint64(n * 7919)
                for i in range(1, n):
                    h = h * _BASE + b[i : i + m]
                out.append(h + np.uint64(n))
        if not out:
            return np.zeros(0, dtype=np.int64)
        return self._bucket(np.concatenate(out))

    @staticmethod
    def shape_features(text: str) -> FloatArr:
        """Dense length / content-shape features (roughly in [0, 1.5])."""
        n = max(len(text), 1)
        if text.isascii():  # the same count as str.isdigit, in C
            digits = sum(map(text.count, "0123456789"))
        else:
            digits = sum(c.isdigit() for c in text)
        maths = sum(text.count(c) for c in "=+*/^<>$\\")
        return np.array(
            [
                np.log1p(len(text)) / 9.0,
                np.log1p(text.count("\n")) / 5.0,
                min(digits / n * 10.0, 1.5),
                min(maths / n * 20.0, 1.5),
                float("```" in text or "def " in text or "{" in text),
                float("?" in text),
                np.log1p(len(re.findall(r"\d+(?:\.\d+)?", text))) / 4.0,
                float(bool(re.search(r"(?m)^[A-D][.)]\s", text))),
            ],
            dtype=np.float32,
        )

    # -- public ----------------------------------------------------------------------
    def clip(self, text: str) -> str:
        mc = self.config.max_chars
        if len(text) > mc:
            text = text[: mc * 2 // 3] + " " + text[-mc // 3 :]
        return text

    def raw(self, text: str) -> SparseVec:
        """Sparse vector before IDF weighting (indices sorted, unique)."""
        cfg = self.config
        text = self.clip(text)
        low = text.lower()
        groups: list[tuple[IntArr, float]] = [
            (self._word_ids(low), cfg.word_weight),
            (self._char_ids(low), cfg.char_weight),
        ]
        idx_parts: list[IntArr] = []
        val_parts: list[FloatArr] = []
        for ids, weight in groups:
            if len(ids) == 0 or weight == 0.0:
                continue
            u, c = np.unique(ids, return_counts=True)
            v = np.log1p(c.astype(np.float32))
            v *= np.float32(weight) / np.float32(np.sqrt(float(v @ v)))
            idx_parts.append(u)
            val_parts.append(v)
        if cfg.shape_weight:
            idx_parts.append(np.arange(N_SHAPE, dtype=np.int64))
            val_parts.append(self.shape_features(text) * np.float32(cfg.shape_weight))
        if self.static is not None and cfg.static_weight:
            d = cfg.static_dims
            v = self.static.embed(text)[:d]
            n = float(np.sqrt(v @ v))
            if n > 0:
                idx_parts.append(np.arange(self.hash_dim, self.hash_dim + d, dtype=np.int64))
                val_parts.append(v * np.float32(cfg.static_weight / n))
        if not idx_parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        idx = np.concatenate(idx_parts)
        val = np.concatenate(val_parts)
        # merge duplicates between groups (collisions) - indices must be unique
        u, inv = np.unique(idx, return_inverse=True)
        if len(u) != len(idx):
            val = np.bincount(inv, weights=val, minlength=len(u)).astype(np.float32)
        return u, val

    def transform(self, text: str) -> SparseVec:
        """IDF-weighted, L2-normalised sparse vector."""
        idx, val = self.raw(text)
        if self.idf is not None and len(idx):
            val = val * self.idf[idx]
        norm = float(np.sqrt(val @ val)) if len(val) else 0.0
        if norm > 0:
            val = val / np.float32(norm)
        return idx, val.astype(np.float32)

    def fit_idf(self, texts: list[str]) -> FloatArr:
        """Learn a smoothed IDF vector from ``texts`` (shape buckets get weight 1)."""
        df = np.zeros(self.dim, dtype=np.float64)
        for t in texts:
            df[self.raw(t)[0]] += 1.0
        idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
        idf[:N_SHAPE] = 1.0
        idf[self.hash_dim :] = 1.0
        self.idf = idf.astype(np.float32)
        return self.idf
