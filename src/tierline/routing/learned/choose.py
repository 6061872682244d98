"""The cost-quality chooser used on top of :meth:`LearnedRouter.predict`."""

from __future__ import annotations

__all__ = ["choose"]


def choose(
    pred: dict[str, float],
    costs: dict[str, float],
    *,
    quality: float | None = None,
    lam: float | None = None,
) -> tuple[str, str]:
    """Pick a model from predicted qualities ``pred`` and (relative) ``costs``.

    * ``quality=q``: the cheapest candidate whose predicted quality is ``>= q``; if none
      reaches it, the one with the highest predicted quality.
    * ``lam=l``: the candidate maximising ``pred - l * cost``.

    Candidates are the models present in both dicts.  Ties break on lower cost, then name.
    Returns ``(model, reason)``.
    """
    cands = sorted((m for m in pred if m in costs), key=lambda m: (costs[m], m))
    if not cands:
        raise ValueError("no candidate model has both a prediction and a cost")
    if (quality is None) == (lam is None):
        raise ValueError("give exactly one of quality= or lam=")
    if quality is not None:
        for m in cands:
            if pred[m] >= quality:
                return m, f"cheapest with predicted quality {pred[m]:.3f} >= {quality:.3f}"
        best = max(cands, key=lambda m: pred[m])
        return best, f"no model reaches {quality:.3f}; best predicted {pred[best]:.3f}"
    assert lam is not None
    best = max(cands, key=lambda m: pred[m] - lam * costs[m])
    return best, (f"max quality - {lam:g} * cost: {pred[best]:.3f} - {lam:g} * {costs[best]:.4g}")
