"""Fault injection: 2,000 requests at concurrency 50 through the gateway, with a chaos
upstream failing half its calls in every way we know, and a healthy second deployment.
Result: zero client-visible failures, every request exactly once in the request log, and
logged tokens / cost equal to what the upstreams reported x price."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.mocks.chaos_server import ChaosServer
from tierline.config import parse_config
from tierline.gateway.server import GatewayThread

N_REQUESTS = 2000
CONCURRENCY = 50


@pytest.fixture
async def chaos_pair() -> AsyncIterator[tuple[ChaosServer, ChaosServer]]:
    bad, good = ChaosServer(fault_rate=0.5, seed=7, stall_s=1.5), ChaosServer(fault_rate=0.0)
    await bad.start()
    await good.start()
    yield bad, good
    await bad.stop()
    await good.stop()


def chaos_config(tmp: Path, bad: ChaosServer, good: ChaosServer) -> dict[str, object]:
    timeouts = {"connect_timeout": 1, "first_token_timeout": 0.4, "idle_timeout": 0.4,
                "total_timeout": 5, "requires_key": False}
    return {
        "server": {"request_log": str(tmp / "chaos.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {"bad": {"base_url": bad.url + "/v1", **timeouts},
                      "good": {"base_url": good.url + "/v1", **timeouts}},
        "deployments": [
            {"name": "bad/m", "provider": "bad", "model": "m",
             "price": {"input": 1.0, "output": 2.0}},
            {"name": "good/m", "provider": "good", "model": "m",
             "price": {"input": 0.5, "output": 1.5}},
        ],
        "routing": {"strategy": "ordered", "groups": {"pair": ["bad/m", "good/m"]}},
        "resilience": {"retries": 1, "backoff_base": 0.001, "backoff_max": 0.01,
                       "breaker_failures": 8, "breaker_window": 1.0, "breaker_cooldown": 0.2},
    }


async def one(client: httpx.AsyncClient, i: int) -> tuple[str, str | None]:
    """(request id, failure description or None)."""
    body = {"model": "pair", "messages": [{"role": "user", "content": f"q{i}"}]}
    if i % 2:
        body["stream"] = True
        async with client.stream("POST", "/chat/completions", json=body) as r:
            lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
            rid = r.headers.get("x-request-id", "")
            if r.status_code != 200:
                return rid, f"stream status {r.status_code}"
            if not lines or lines[-1] != "data: [DONE]":
                return rid, "stream without [DONE]"
            if any('"error"' in ln for ln in lines):
                return rid, "error event in stream"
            return rid, None
    r = await client.post("/chat/completions", json=body)
    rid = r.headers.get("x-request-id", "")
    return rid, None if r.status_code == 200 else f"status {r.status_code}: {r.text[:200]}"


async def test_chaos_zero_client_failures_exactly_once_exact_cost(
        chaos_pair: tuple[ChaosServer, ChaosServer], tmp_path: Path) -> None:
    bad, good = chaos_pair
    cfg = parse_config(chaos_config(tmp_path, bad, good), "chaos")
    results: list[tuple[str, str | None]] = []
    with GatewayThread(cfg) as gw:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30, limits=limits) as client:
            sem = asyncio.Semaphore(CONCURRENCY)

            async def run(i: int) -> None:
                async with sem:
                    results.append(await one(client, i))

            await asyncio.gather(*(run(i) for i in range(N_REQUESTS)))
    # the gateway thread has stopped: its request log is flushed and closed
    failures = [f for _, f in results if f]
    assert failures == [], Counter(failures).most_common(5)
    assert sum(bad.faults.values()) > N_REQUESTS * 0.1, bad.faults  # chaos really happened
    assert set(bad.faults) == {"429", "500", "503", "stall", "reset", "truncate", "malformed",
                               "error_in_200"}
    ids = [rid for rid, _ in results]
    assert len(set(ids)) == N_REQUESTS
    conn = sqlite3.connect(tmp_path / "chaos.sqlite3")
    rows = conn.execute("SELECT id, deployment, status, prompt_tokens, completion_tokens, "
                        "cost_pico FROM requests").fetchall()
    conn.close()
    assert len(rows) == N_REQUESTS and {r[0] for r in rows} == set(ids)
    assert all(r[2] == 200 for r in rows)
    for srv, dep, p_in, p_out in ((bad, "bad/m", 1_000_000, 2_000_000),
                                  (good, "good/m", 500_000, 1_500_000)):
        mine = [r for r in rows if r[1] == dep]
        assert len(mine) == srv.ok
        pt = sum(u[0] for u in srv.usage_sent)
        ct = sum(u[1] for u in srv.usage_sent)
        assert sum(r[3] for r in mine) == pt and sum(r[4] for r in mine) == ct
        assert sum(r[5] for r in mine) == pt * p_in + ct * p_out
    print(f"\nchaos: {N_REQUESTS} requests, faults injected {dict(bad.faults)}, "
          f"served by bad={bad.ok} good={good.ok}, client-visible failures 0")


async def test_fault_after_first_byte_is_an_error_event_and_logged(
        tmp_path: Path) -> None:
    late = ChaosServer(fault_rate=1.0, seed=3, late_faults=True, chunks=6)
    await late.start()
    try:
        cfg = parse_config(chaos_config(tmp_path, late, late), "late")
        with GatewayThread(cfg) as gw:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
                outcomes = []
                for i in range(12):
                    body = {"model": "bad/m", "stream": True,
                            "messages": [{"role": "user", "content": f"x{i}"}]}
                    async with client.stream("POST", "/chat/completions", json=body) as r:
                        lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
                        outcomes.append((r.status_code, lines, r.headers["x-request-id"]))
        conn = sqlite3.connect(tmp_path / "chaos.sqlite3")
        rows = dict(conn.execute("SELECT id, status FROM requests").fetchall())
        conn.close()
        late_failures = 0
        for status, lines, rid in outcomes:
            if status != 200 or len(lines) <= 2:
                continue  # failed before the first byte: an ordinary error response
            assert lines[-1] == "data: [DONE]"
            if any('"error"' in ln for ln in lines):
                late_failures += 1
                assert rows[rid] >= 500  # logged as failed, with its partial usage
        assert late_failures > 0
    finally:
        await late.stop()
    _ = time
