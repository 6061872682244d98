"""`LiveStats`: the worker's own EWMAs, combined with the other workers' (peer values) when
several processes share them through the ledger."""

from __future__ import annotations

import json

import pytest

from tierline.catalog.load import build_catalog
from tierline.config import parse_config
from tierline.routing.filters import Constraints
from tierline.routing.policy import Router
from tierline.routing.stats import PEER_CAP, LiveStats


def fed(*ttfts: float, name: str = "a") -> LiveStats:
    s = LiveStats()
    for t in ttfts:
        s.observe(name, latency_s=t * 2, ttft_s=t, output_tokens=11)
    return s


def test_without_peers_the_readers_return_the_own_ewma() -> None:
    s = fed(1.0, 2.0)
    assert s.get("a").ttft_s.value == pytest.approx(1.2)  # 1 + 0.2 * (2 - 1)
    assert s.ttft("a") == s.get("a").ttft_s.value and s.get("a").ttft_s.n == 2
    assert s.latency("a") == pytest.approx(2.4)
    assert s.tokens_per_s("a") == pytest.approx(11 / 1.0 + 0.2 * (11 / 2.0 - 11 / 1.0))
    assert s.ttft("unknown") is None and s.latency("unknown") is None
    s.set_peers([])
    assert s.ttft("a") == pytest.approx(1.2)


def test_own_and_peer_ewmas_weighted_by_their_observation_counts() -> None:
    own = fed(0.1, 0.1, 0.1)  # 3 observations of 0.1
    peer = fed(0.5)  # 1 observation of 0.5
    own.set_peers([json.loads(json.dumps(peer.snapshot()))])  # as it travels: JSON
    assert own.ttft("a") == pytest.approx((3 * 0.1 + 1 * 0.5) / 4)
    assert own.latency("a") == pytest.approx((3 * 0.2 + 1 * 1.0) / 4)
    assert own.get("a").ttft_s.value == pytest.approx(0.1)  # the own EWMA is untouched
    # two peers
    own.set_peers([peer.snapshot(), fed(0.3, 0.3).snapshot()])
    assert own.ttft("a") == pytest.approx((3 * 0.1 + 0.5 + 2 * 0.3) / 6)
    # the peers are replaced, not accumulated
    own.set_peers([peer.snapshot()])
    assert own.ttft("a") == pytest.approx((3 * 0.1 + 0.5) / 4)


def test_counts_are_capped_so_the_mean_still_tracks_recent_latency() -> None:
    veteran = fed(*[1.0] * 500)  # a worker that has seen a lot
    fresh = fed(*[0.2] * 5)
    fresh.set_peers([veteran.snapshot()])
    assert fresh.ttft("a") == pytest.approx((5 * 0.2 + PEER_CAP * 1.0) / (5 + PEER_CAP))
    busy = fed(*[0.2] * 500)
    busy.set_peers([veteran.snapshot()])
    assert busy.ttft("a") == pytest.approx(0.6)  # 20 against 20, not 500 against 500
    capped = LiveStats(cap=1)
    capped.observe("a", latency_s=0.2, ttft_s=0.2, output_tokens=0)
    capped.observe("a", latency_s=0.2, ttft_s=0.2, output_tokens=0)
    capped.set_peers([veteran.snapshot()])
    assert capped.ttft("a") == pytest.approx(0.6)


def test_a_deployment_measured_only_by_a_peer_counts_as_measured() -> None:
    s = LiveStats()
    s.set_peers([fed(0.4, name="b").snapshot()])
    assert s.ttft("b") == pytest.approx(0.4) and s.ttft("a") is None
    assert s.tokens_per_s("b") == pytest.approx(11 / 0.4)
    assert s.get("b").ttft_s.value is None  # not observed here
    assert s.snapshot() == {}  # a worker publishes only its own observations


def test_malformed_peer_snapshots_are_skipped() -> None:
    s = fed(0.2)
    s.set_peers([None, [], {"a": 3}, {1: {}}, {"a": {"ttft_s": [0.1]}},
                 {"a": {"ttft_s": ["x", 3]}}, {"a": {"ttft_s": [float("nan"), 3]}},
                 {"a": {"ttft_s": [0.9, 0]}}, {"a": {"latency_s": [0.9, 1]}}])
    assert s.ttft("a") == pytest.approx(0.2)
    assert s.latency("a") == pytest.approx((0.4 + 0.9) / 2)


def test_fastest_does_not_re_explore_what_a_peer_measured() -> None:
    raw = {"catalog": {"builtin": False},
           "providers": {"p": {"base_url": "http://127.0.0.1:9/v1", "requires_key": False}},
           "deployments": [{"name": n, "provider": "p", "model": n,
                            "price": {"input": 1, "output": 1}} for n in ("slow", "fast")],
           "routing": {"strategy": "fastest"}}
    config = parse_config(raw, "t")
    router = Router(build_catalog(config), config.routing)

    def chosen() -> str:
        return router.route("auto", {}, Constraints(prompt_tokens=5)).chosen.name

    assert chosen() == "slow"  # nothing measured: explore, in catalog order
    peer = LiveStats()
    peer.observe("slow", latency_s=0.15, ttft_s=0.15, output_tokens=5)
    router.stats.set_peers([peer.snapshot()])
    assert chosen() == "fast"  # slow is measured (by the peer): explore fast
    peer.observe("fast", latency_s=0.01, ttft_s=0.01, output_tokens=5)
    router.stats.set_peers([peer.snapshot()])
    assert chosen() == "fast"  # both measured: the fastest
    router.stats.observe("fast", latency_s=0.5, ttft_s=0.5, output_tokens=5)
    assert chosen() == "slow"  # (0.5 + 0.01) / 2 > 0.15
