"""Source fixed effects for a two-model fit - kept for the validation studies only.

Shipped in ``train._fit`` for one session (2026-11-29), then removed: they help routing
*within* one benchmark file a little (``router_fe_val.py``: +0.004..+0.011 per-source APGR)
and cost a lot on unseen *mixed* traffic (``router_mixed_val.py``: pooled APGR 0.615 -> 0.513),
because which kind of prompt needs the strong model is most of what generalises.

During training every model gets an indicator column per source (a per-source intercept);
afterwards each model's bias takes the average effect (the indicators at their share of the
group's prompts) and the columns are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tierline.routing.learned.data import Example
from tierline.routing.learned.train import _fit_group


def fit_with_source_effects(
    X: Any, examples: Sequence[Example], group: list[str], C: float, shared_scale: float
) -> dict[str, tuple[np.ndarray, float]]:
    """:func:`train._fit_group` with one intercept per model and source, averaged away."""
    import scipy.sparse as sp  # type: ignore[import-untyped, unused-ignore]

    rows = np.array(
        [i for i, e in enumerate(examples) if any(m in e.outcomes for m in group)], np.int64
    )
    sources = sorted({examples[int(i)].source for i in rows})
    if len(sources) < 2:
        return _fit_group(X, examples, group, C, shared_scale)
    col = {s: j for j, s in enumerate(sources)}
    ind = sp.csr_matrix(
        (np.ones(len(rows)), (rows, [col[examples[int(i)].source] for i in rows])),
        shape=(X.shape[0], len(sources)),
    )
    share = np.asarray(ind[rows].mean(axis=0)).ravel()
    fits = _fit_group(sp.hstack([X, ind]).tocsr(), examples, group, C, shared_scale)
    D = X.shape[1]
    return {m: (w[:D], b + float(w[D:] @ share)) for m, (w, b) in fits.items()}
