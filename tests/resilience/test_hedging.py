"""Hedging: a slow first deployment is raced by the next one after `hedge_after`; the
first answer wins, the loser is cancelled, and both costs are logged."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.mocks.openai_server import MockOpenAI
from tierline.accounting import tokens
from tierline.config import parse_config
from tierline.gateway.server import GatewayThread

MSG = [{"role": "user", "content": "hedge me"}]


@pytest.fixture(scope="module")
async def pair() -> AsyncIterator[tuple[MockOpenAI, MockOpenAI]]:
    a, b = MockOpenAI(), MockOpenAI()
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture(scope="module")
def hgw(pair: tuple[MockOpenAI, MockOpenAI], tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[GatewayThread]:
    a, b = pair
    tmp: Path = tmp_path_factory.mktemp("hedge")
    cfg = parse_config({
        "server": {"request_log": str(tmp / "h.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {"a": {"base_url": a.url + "/v1", "requires_key": False},
                      "b": {"base_url": b.url + "/v1", "requires_key": False}},
        "deployments": [{"name": "slow", "provider": "a", "model": "a",
                         "price": {"input": 1, "output": 1}},
                        {"name": "fast", "provider": "b", "model": "b",
                         "price": {"input": 2, "output": 2}}],
        "routing": {"strategy": "ordered", "groups": {"g": ["slow", "fast"]}},
        "resilience": {"hedge_after": 0.2, "retries": 0},
    }, "hedge")
    with GatewayThread(cfg) as g:
        yield g


def row(gw: GatewayThread, rid: str) -> sqlite3.Row:
    for _ in range(100):
        conn = sqlite3.connect(gw.app.config.request_log_path())
        conn.row_factory = sqlite3.Row
        r = conn.execute("SELECT * FROM requests WHERE id = ?", (rid,)).fetchone()
        conn.close()
        if r is not None:
            return r
        time.sleep(0.05)
    raise AssertionError("no log row")


@pytest.mark.parametrize("stream", [False, True])
async def test_slow_primary_is_hedged(hgw: GatewayThread, pair: tuple[MockOpenAI, MockOpenAI],
                                      stream: bool) -> None:
    a, b = pair
    a.reset()
    b.reset()
    a.script(latency=1.5)
    b.script(prompt_tokens=10, completion_tokens=5)
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=hgw.base_url, timeout=30) as c:
        if stream:
            async with c.stream("POST", "/chat/completions", json={
                    "model": "g", "messages": MSG, "stream": True}) as r:
                _ = [x async for x in r.aiter_lines()]
        else:
            r = await c.post("/chat/completions", json={"model": "g", "messages": MSG})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200 and r.headers["x-tierline-model"] == "fast"
    assert elapsed < 1.2  # did not wait for the slow one
    assert len(a.requests) == 1 and len(b.requests) == 1
    await asyncio.sleep(0.1)
    rec = row(hgw, r.headers["x-request-id"])
    loser = tokens.count_messages(MSG) * 1_000_000  # its prompt at $1 / Mtok, estimated
    assert rec["cost_pico"] == 10 * 2_000_000 + 5 * 2_000_000 + loser
    assert rec["estimated"] == 1
    attempts = json.loads(rec["route_detail"])["attempts"]
    assert any(x["deployment"] == "slow" and "hedge" in (x["error"] or "") for x in attempts)


async def test_fast_primary_is_not_hedged(hgw: GatewayThread,
                                          pair: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, b = pair
    a.reset()
    b.reset()
    async with httpx.AsyncClient(base_url=hgw.base_url, timeout=30) as c:
        r = await c.post("/chat/completions", json={"model": "g", "messages": MSG})
    assert r.headers["x-tierline-model"] == "slow" and len(b.requests) == 0


async def test_a_caller_cancelled_before_the_hedge_stops_the_first_call() -> None:
    """The client leaves while the primary runs, before `hedge_after`: the primary call is
    cancelled too (asyncio.wait does not cancel what it waits for)."""
    from tierline.catalog.model import Deployment
    from tierline.config import ResilienceSettings
    from tierline.resilience.breaker import Breakers
    from tierline.resilience.executor import Executor, Trace
    from tierline.types import ChatRequest

    cancelled: list[str] = []

    class Slow:
        async def complete(self, req: ChatRequest, dep: Deployment) -> object:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(dep.name)
                raise
            raise AssertionError("not cancelled")

    ex = Executor({"p": Slow()}, ResilienceSettings(hedge_after=1.0),  # type: ignore[dict-item]
                  Breakers(failures=5, window=30, cooldown=30))
    chain = [Deployment(name=n, provider="p", model="m") for n in ("d1", "d2")]
    req = ChatRequest(body={"messages": [{"role": "user", "content": "hi"}]}, model="d1,d2")
    task = asyncio.ensure_future(ex.complete(req, chain, Trace()))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert cancelled == ["d1"]
