"""Static (MiniLM-distilled) token embeddings: WordPiece, pooling, featuriser integration."""

from __future__ import annotations

import numpy as np

from tierline.routing.learned.features import FeatureConfig, Featurizer
from tierline.routing.learned.static_embed import StaticEmbedder, default_embeddings_path

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "the", "cafe", "?", "x"]


def _tiny() -> StaticEmbedder:
    rng = np.random.default_rng(0)
    return StaticEmbedder(VOCAB, rng.standard_normal((len(VOCAB), 4)).astype(np.float32))


def test_wordpiece_greedy_longest_match() -> None:
    e = _tiny()
    assert e.token_ids("Unaffable the") == [4, 5, 6, 7]
    assert e.token_ids("Café?") == [8, 9]  # lower-cased, accent stripped, punctuation split
    assert e.token_ids("zzz") == [1]  # no piece matches -> [UNK]
    assert e.token_ids("") == []


def test_embed_is_normalised_mean() -> None:
    e = _tiny()
    v = e.embed("the cafe")
    m = e.emb[[7, 8]].mean(axis=0)
    assert np.allclose(v, m / np.linalg.norm(m), atol=1e-6)
    assert not e.embed("   ").any()


def test_featurizer_appends_static_group() -> None:
    cfg = FeatureConfig(bits=10, static_dims=3, static_weight=2.0)
    f = Featurizer(cfg, static=_tiny())
    assert f.dim == 1024 + 3
    idx, val = f.raw("the cafe x")
    tail = idx >= 1024
    assert tail.sum() == 3
    assert np.isclose(float(np.linalg.norm(val[tail])), 2.0, atol=1e-5)
    f.fit_idf(["the cafe", "x"])
    assert f.idf is not None and np.all(f.idf[1024:] == 1.0)


def test_shipped_table_loads() -> None:
    e = StaticEmbedder.load(default_embeddings_path())
    assert e.dim >= 64 and len(e.vocab) > 30_000
    assert e.token_ids("hello world") and e.embed("What is 2 + 2?").shape == (e.dim,)


def test_cjk_ideographs_are_words_of_their_own() -> None:
    """As BERT's basic tokenizer: a run of ideographs is split into characters (each a vocab
    entry), kana and hangul are not."""
    e = StaticEmbedder.load()
    assert e.token_ids("北京天安") == e.token_ids("北 京 天 安")
    assert [e.vocab[i] for i in e.token_ids("北京")] == ["北", "京"]
    assert e.token_ids("東京は") == e.token_ids("東 京 は")
