"""The cost-quality chooser used on top of :meth:`LearnedRouter.predict`."""

from __future__ import annotations

__all__ = ["choose"]


def choose(
    pred: dict[str, float],
    costs: dict[str, float],
    *,
    quality: float | None = None,
    lam: float | None = None,
    max_loss: float | None = None,
) -> tuple[str, str]:
    """Pick a model from predicted qualities ``pred`` and (relative) ``costs``.

    * ``quality=q``: the cheapest candidate whose predicted quality is ``>= q``; if none
      reaches it, the one with the highest predicted quality.
    * ``lam=l``: the candidate maximising ``pred - l * cost``.
    * ``max_loss=d``: the cheapest candidate whose predicted quality is ``>= best - d``.

    Candidates are the models present in both dicts.  Ties break on lower cost, then name.
    Returns ``(model, reason)``.
    """
    cands = sorted((m for m in pred if m in costs), key=lambda m: (costs[m], m))
    if not cands:
        raise ValueError("no candidate model has both a prediction and a cost")
    if sum(x is not None for x in (quality, lam, max_loss)) != 1:
        raise ValueError("give exactly one of quality=, lam= or max_loss=")
    if max_loss is not None:
        best_q = max(pred[m] for m in cands)
        for m in cands:
            if pred[m] >= best_q - max_loss:
                return m, f"cheapest within {max_loss:g} of the best {best_q:.3f}: {pred[m]:.3f}"
    if quality is not None:
        for m in cands:
            if pred[m] >= quality:
                return m, f"cheapest with predicted quality {pred[m]:.3f} >= {quality:.3f}"
        best = max(cands, key=lambda m: pred[m])
        return best, f"no model reaches {quality:.3f}; best predicted {pred[best]:.3f}"
    assert lam is not None
    best = max(cands, key=lambda m: pred[m] - lam * costs[m])
    return best, (f"max quality - {lam:g} * cost: {pred[best]:.3f} - {lam:g} * {costs[best]:.4g}")
