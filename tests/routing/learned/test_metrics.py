from __future__ import annotations

import numpy as np
import pytest

from tierline.routing.learned import metrics as M


def _apgr(scores: list[float], qs: list[float], qw: list[float], n: int = 10) -> float:
    _, sh, q = M.routellm_curve(scores, qs, qw, n)
    return M.apgr(sh, q, float(np.mean(qs)), float(np.mean(qw)))


def test_curve_endpoints_and_hand_example() -> None:
    # 4 prompts: strong wins on #0 only; the router ranks #0 first.
    qs, qw = [1, 1, 0, 1], [0, 1, 0, 1]
    _, sh, q = M.routellm_curve([0.9, 0.5, 0.3, 0.1], qs, qw, num_results=4)
    assert sh.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert q.tolist() == [0.5, 0.75, 0.75, 0.75, 0.75]
    # AUC = 0.125*0.25... trapezoids: (0.5+0.75)/2*0.25 + 0.75*0.75 = 0.71875
    assert M.apgr(sh, q, 0.75, 0.5) == pytest.approx((0.71875 - 0.5) / 0.25)
    assert M.cpt(sh, q, 0.75, 0.5, 0.5) == pytest.approx(0.125)


def test_oracle_and_random() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    qw = (rng.random(n) < 0.6).astype(float)
    qs = np.maximum(qw, (rng.random(n) < 0.5).astype(float))
    # random router recovers ~half of the gap
    assert _apgr(list(rng.random(n)), list(qs), list(qw)) == pytest.approx(0.5, abs=0.03)
    oracle = qs - qw + 1e-6 * rng.random(n)
    assert _apgr(list(oracle), list(qs), list(qw), 100) > 0.85
    # a constant router (all ties) gives only the two end points -> APGR 0.5
    assert _apgr([0.0] * 8, [1.0] * 8, [0.0] * 8) == pytest.approx(0.5)


def test_share_at_quality() -> None:
    share, mask = M.share_at_quality([3, 2, 1, 0], [1, 1, 1, 1], [0, 1, 0, 1], 0.95)
    # need both weak failures (#0, #2) routed to strong; #2 ranks after #1 -> 3 of 4
    assert share == 0.75
    assert mask.tolist() == [True, True, True, False]


def test_hull_and_aiq() -> None:
    h = M.nondecreasing_hull([0, 1, 2, 3], [0.2, 0.3, 0.9, 0.8])
    assert h.tolist() == [[0.0, 0.2], [2.0, 0.9]]
    # straight line from 0.2 to 0.9 over [0,2], then flat 0.9 to 3
    assert M.aiq([0, 1, 2, 3], [0.2, 0.3, 0.9, 0.8], 0.0, 3.0) == pytest.approx(
        (0.55 * 2 + 0.9) / 3, abs=1e-3
    )
    # a single point: 0 below its cost, its quality above
    assert M.aiq([1.0], [0.6], 0.0, 2.0) == pytest.approx(0.3, abs=1e-3)


def test_apgr_of_is_apgr_on_the_routellm_curve() -> None:
    rng = np.random.default_rng(3)
    qs, qw = (rng.random(200) < 0.8).astype(float), (rng.random(200) < 0.6).astype(float)
    good = qs - qw + 0.1 * rng.random(200)
    _, sh, q = M.routellm_curve(good, qs, qw)
    assert M.apgr_of(good, qs, qw) == M.apgr(sh, q, qs.mean(), qw.mean())
    assert M.apgr_of(good, qs, qw) > 0.8 > M.apgr_of(-good, qs, qw)
