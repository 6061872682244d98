from __future__ import annotations

import numpy as np

from tierline.routing.learned.features import FeatureConfig, Featurizer


def test_digit_share_counts_unicode_digits_like_isdigit() -> None:
    """The ASCII fast path counts exactly what str.isdigit counts."""
    for text in ("abc 123 4.5", "x² ١٢٣ 7", "no digits here", ""):
        n = max(len(text), 1)
        want = min(sum(c.isdigit() for c in text) / n * 10.0, 1.5)
        assert Featurizer.shape_features(text)[2] == np.float32(want)


def test_hashes_do_not_depend_on_the_word_cache() -> None:
    cfg = FeatureConfig(bits=12, static_dims=0)
    warm, cold = Featurizer(cfg), Featurizer(cfg)
    text = "The cat sat on the mat; the cat sat again. Le chat: été 42"
    for _ in range(3):
        warm.raw(text)
    a, b = warm.raw(text), cold.raw(text)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
