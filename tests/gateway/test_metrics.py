"""Merging the metrics snapshots of several worker processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.mocks.openai_server import MockOpenAI
from tierline.config import parse_config
from tierline.gateway.app import create_app
from tierline.gateway.metrics import Metrics
from tierline.gateway.server import GatewayThread


def _worker(n_ok: int, healthy: int, latency: float) -> Metrics:
    m = Metrics()
    for _ in range(n_ok):
        m.requests.inc(("d", "p", "200"))
        m.latency.observe(("d", "p"), latency)
    m.cost.inc(("d", "p"), 0.5)
    m.health.set(("d",), healthy)
    return m


def test_merged_sums_counters_keeps_dead_counts_and_live_gauges() -> None:
    a, b, dead = _worker(3, 1, 0.02), _worker(2, 0, 0.2), _worker(5, 0, 0.02)
    snaps = [(json.loads(json.dumps(w.snapshot())), alive)
             for w, alive in ((a, True), (b, True), (dead, False))]
    total = Metrics.merged(snaps)
    text = total.render()
    assert 'tierline_requests_total{model="d",provider="p",status="200"} 10' in text
    assert 'tierline_cost_usd_total{model="d",provider="p"} 1.5' in text
    assert 'tierline_request_latency_seconds_count{model="d",provider="p"} 10' in text
    assert 'tierline_request_latency_seconds_bucket{model="d",provider="p",le="0.025"} 8' in text
    # a live worker with the circuit open makes the deployment unhealthy; the dead one is out
    assert 'tierline_deployment_healthy{model="d"} 0' in text
    only_live_ok = Metrics.merged([(json.loads(json.dumps(a.snapshot())), True),
                                   (json.loads(json.dumps(dead.snapshot())), False)])
    assert 'tierline_deployment_healthy{model="d"} 1' in only_live_ok.render()


async def test_in_flight_gauge_through_http(tmp_path: Path) -> None:
    async with MockOpenAI() as up:
        up.script(latency=1.0)
        raw = {"server": {"request_log": str(tmp_path / "r.sqlite3")},
               "catalog": {"builtin": False},
               "providers": {"up": {"base_url": up.url + "/v1", "requires_key": False}},
               "deployments": [{"name": "m", "provider": "up", "model": "m",
                                "price": {"input": 1, "output": 1}}]}
        with GatewayThread(app=create_app(parse_config(raw, "t"))) as g:
            async with httpx.AsyncClient(base_url=g.base_url, timeout=10) as c:

                async def gauge() -> str:
                    text = (await c.get(g.base_url.removesuffix("/v1") + "/metrics")).text
                    return next(x for x in text.splitlines()
                                if x.startswith("tierline_in_flight_requests "))

                slow = asyncio.create_task(c.post("/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                await asyncio.sleep(0.4)
                assert await gauge() == "tierline_in_flight_requests 1"
                assert (await slow).status_code == 200
                assert await gauge() == "tierline_in_flight_requests 0"
