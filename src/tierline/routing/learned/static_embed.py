"""Static (per-token) prompt embeddings distilled from all-MiniLM-L6-v2; numpy + pure Python.

The table (``static_embeddings.npz``: ``vocab`` = the WordPiece vocabulary joined by newlines,
``emb`` = float16 (vocab, d)) is produced offline by :mod:`.distill`.  A prompt is lower-cased,
accents stripped, split BERT-style on whitespace / punctuation / around CJK ideographs, each
word cut into WordPiece tokens by greedy longest-match (cached per word), and its vector is
the mean of the tokens' rows, L2-normalised.
"""

from __future__ import annotations

import re
import unicodedata
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["StaticEmbedder", "default_embeddings_path"]

F32 = npt.NDArray[np.float32]
_SPLIT_RE = re.compile(r"[^\W_]+|[^\w\s]|_")
# CJK ideographs are words of their own (BERT's ``_tokenize_chinese_chars``; kana and hangul
# are not split)
_CJK_RE = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df"
    "\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f]"
)
_MAX_WORD = 100
_CACHE_MAX = 200_000


def default_embeddings_path() -> Path:
    """Path of the static embedding table shipped inside the package."""
    return Path(str(resources.files("tierline.routing.learned") / "static_embeddings.npz"))


class StaticEmbedder:
    """Greedy WordPiece + mean of static token vectors."""

    def __init__(self, vocab: list[str], emb: F32) -> None:
        if len(vocab) != emb.shape[0]:
            raise ValueError("vocab and embedding rows differ")
        self.vocab = vocab
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.dim = int(emb.shape[1])
        self._ids = {t: i for i, t in enumerate(vocab)}
        self._unk = self._ids.get("[UNK]", 0)
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> StaticEmbedder:
        with np.load(Path(path or default_embeddings_path()), allow_pickle=False) as z:
            return cls(str(z["vocab"]).split("\n"), z["emb"].astype(np.float32))

    def _wordpiece(self, word: str) -> list[int]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        ids = self._ids
        out: list[int] = []
        if len(word) > _MAX_WORD:
            out = [self._unk]
        else:
            start = 0
            n = len(word)
            while start < n:
                end = n
                cur = -1
                while start < end:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    j = ids.get(piece)
                    if j is not None:
                        cur = j
                        break
                    end -= 1
                if cur < 0:
                    out = [self._unk]
                    break
                out.append(cur)
                start = end
        if len(self._cache) < _CACHE_MAX:
            self._cache[word] = out
        return out

    def token_ids(self, text: str) -> list[int]:
        """WordPiece ids of ``text`` (BERT uncased basic tokenisation, no special tokens)."""
        low = text.lower()
        if not low.isascii():
            low = "".join(
                c for c in unicodedata.normalize("NFD", low) if unicodedata.category(c) != "Mn"
            )
            low = _CJK_RE.sub(r" \g<0> ", low)
        ids: list[int] = []
        get = self._cache.get
        for w in _SPLIT_RE.findall(low):
            hit = get(w)
            ids.extend(hit if hit is not None else self._wordpiece(w))
        return ids

    def embed(self, text: str) -> F32:
        """Mean of the token vectors, L2-normalised (zeros for an empty text)."""
        ids = self.token_ids(text)
        if not ids:
            return np.zeros(self.dim, np.float32)
        v: F32 = self.emb[np.array(ids, dtype=np.int64)].mean(axis=0)
        n = float(np.sqrt(v @ v))
        if n > 0:
            v = v / np.float32(n)
        return v
