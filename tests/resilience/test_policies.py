"""Retries, fail-over rules, circuit breaking and client disconnects, through the HTTP API."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.mocks.openai_server import MockOpenAI
from tierline.config import parse_config
from tierline.gateway.server import GatewayThread

MSG = [{"role": "user", "content": "hi"}]
Mocks = tuple[MockOpenAI, MockOpenAI, MockOpenAI]


@pytest.fixture(scope="module")
async def mocks3() -> AsyncIterator[Mocks]:
    ms = (MockOpenAI(), MockOpenAI(), MockOpenAI())
    for m in ms:
        await m.start()
    yield ms
    for m in ms:
        await m.stop()


@pytest.fixture
def m3(mocks3: Mocks) -> Mocks:
    for m in mocks3:
        m.reset()
    return mocks3


@pytest.fixture(scope="module")
def gw3(mocks3: Mocks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    tmp = tmp_path_factory.mktemp("res")
    t = {"requires_key": False, "first_token_timeout": 2, "idle_timeout": 2,
         "total_timeout": 5}
    raw = {
        "server": {"request_log": str(tmp / "r.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {f"p{i}": {"base_url": m.url + "/v1", **t} for i, m in enumerate(mocks3)},
        "deployments": [
            {"name": "small-a", "provider": "p0", "model": "a", "context_window": 4096},
            {"name": "small-b", "provider": "p1", "model": "b", "context_window": 4096},
            {"name": "big-c", "provider": "p2", "model": "c", "context_window": 128000},
        ],
        "routing": {"strategy": "ordered", "groups": {"chain": ["small-a", "small-b", "big-c"]}},
        "resilience": {"retries": 1, "backoff_base": 0.01, "breaker_failures": 3,
                       "breaker_window": 30, "breaker_cooldown": 0.5},
    }
    with GatewayThread(parse_config(raw, "res")) as g:
        yield g


@pytest.fixture
async def c3(gw3: GatewayThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw3.base_url, timeout=30) as c:
        yield c


async def chat(c: httpx.AsyncClient, model: str = "chain") -> httpx.Response:
    return await c.post("/chat/completions", json={"model": model, "messages": MSG})


async def test_retry_honours_retry_after(c3: httpx.AsyncClient, m3: Mocks) -> None:
    a, b, _ = m3
    a.script(status=429, error_message="slow down", headers={"retry-after-ms": "150"})
    t0 = time.monotonic()
    r = await chat(c3)
    assert r.status_code == 200 and r.headers["x-tierline-model"] == "small-a"
    assert len(a.requests) == 2 and len(b.requests) == 0
    assert time.monotonic() - t0 >= 0.15


async def test_retry_after_too_long_fails_over_at_once(c3: httpx.AsyncClient,
                                                       m3: Mocks) -> None:
    a, _b, _ = m3
    a.script(status=429, error_message="slow down", headers={"retry-after": "120"})
    r = await chat(c3)
    assert r.headers["x-tierline-model"] == "small-b"
    assert len(a.requests) == 1


@pytest.mark.parametrize("status", [400, 422])
async def test_client_errors_are_neither_retried_nor_failed_over(
        c3: httpx.AsyncClient, m3: Mocks, status: int) -> None:
    a, b, c = m3
    a.script(status=status, error_message="unsupported value for 'foo'")
    r = await chat(c3)
    assert r.status_code == 400
    assert len(a.requests) == 1 and len(b.requests) == 0 and len(c.requests) == 0


async def test_upstream_auth_failure_fails_over(c3: httpx.AsyncClient, m3: Mocks) -> None:
    a, _b, _ = m3
    a.script(status=401, error_message="bad key")
    r = await chat(c3)
    assert r.status_code == 200 and r.headers["x-tierline-model"] == "small-b"
    assert len(a.requests) == 1


async def test_context_length_goes_to_a_larger_window(c3: httpx.AsyncClient,
                                                      m3: Mocks) -> None:
    a, b, _c = m3
    a.script(status=400, error_message="This model's maximum context length is 4096 tokens")
    r = await chat(c3)
    assert r.status_code == 200 and r.headers["x-tierline-model"] == "big-c"
    assert len(b.requests) == 0  # same window: skipped


async def test_a_too_small_window_stays_skipped_after_another_failure(
        c3: httpx.AsyncClient, m3: Mocks) -> None:
    """small-a overflows, big-c then fails for another reason: small-b (as small as small-a)
    is still not tried - it would overflow too."""
    a, b, c = m3
    a.script(status=400, error_message="This model's maximum context length is 4096 tokens")
    for _ in range(2):
        c.script(status=503, error_message="down")
    r = await chat(c3, "small-a,big-c,small-b")
    assert r.status_code in (502, 503)
    assert len(b.requests) == 0 and len(c.requests) == 2


async def test_content_policy_is_not_failed_over_by_default(c3: httpx.AsyncClient,
                                                            m3: Mocks) -> None:
    a, b, _ = m3
    a.script(status=400, error_message="Your request was rejected by our content policy")
    r = await chat(c3)
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation"
    assert len(b.requests) == 0


async def test_circuit_opens_cools_down_and_comes_back(
        gw3: GatewayThread, c3: httpx.AsyncClient, m3: Mocks) -> None:
    a, _b, _ = m3
    for _ in range(4):
        a.script(status=503, error_message="down")
    for _ in range(2):
        r = await chat(c3)
        assert r.headers["x-tierline-model"] == "small-b"
    health = {d["name"]: d["health"] for d in (await c3.get("/deployments")).json()["data"]}
    assert health["small-a"] == "open"
    a.reset()
    r = await chat(c3)  # routed around the open circuit: A is not even tried
    assert r.headers["x-tierline-model"] == "small-b" and len(a.requests) == 0
    metrics = (await c3.get(gw3.root_url + "/metrics")).text
    assert 'tierline_deployment_healthy{model="small-a"} 0' in metrics
    await asyncio.sleep(0.6)  # cool-down over: one half-open probe, which succeeds
    r = await chat(c3)
    assert r.headers["x-tierline-model"] == "small-a"
    health = {d["name"]: d["health"] for d in (await c3.get("/deployments")).json()["data"]}
    assert health["small-a"] == "closed"


async def test_probe_rejected_on_its_merits_does_not_lock_the_deployment_out(
        gw3: GatewayThread, c3: httpx.AsyncClient, m3: Mocks) -> None:
    """The half-open probe gets a 400 (the request's fault, no verdict on health): the next
    request probes again instead of finding the deployment excluded until restart."""
    a, _b, _ = m3
    for _ in range(4):
        a.script(status=503, error_message="down")
    for _ in range(2):
        await chat(c3)
    a.reset()
    await asyncio.sleep(0.6)
    a.script(status=400, error_message="bad request")
    r = await chat(c3, "small-a")  # the probe, rejected on its merits
    assert r.status_code == 400
    r = await chat(c3, "small-a")
    assert r.status_code == 200 and r.headers["x-tierline-model"] == "small-a"
    health = {d["name"]: d["health"] for d in (await c3.get("/deployments")).json()["data"]}
    assert health["small-a"] == "closed"


async def test_client_disconnect_cancels_the_upstream_stream(
        gw3: GatewayThread, c3: httpx.AsyncClient, m3: Mocks) -> None:
    a, _, _ = m3
    a.script(text=" ".join(f"w{i}" for i in range(40)), chunks=40, delay=0.1)
    t0 = time.monotonic()
    async with c3.stream("POST", "/chat/completions", json={
            "model": "small-a", "messages": MSG, "stream": True}) as r:
        rid = r.headers["x-request-id"]
        n = 0
        async for line in r.aiter_lines():
            n += line.startswith("data: ")
            if n >= 3:
                break
    # the client went away after 3 chunks of a 4 s stream
    path = gw3.app.config.request_log_path()
    row = None
    for _ in range(100):
        conn = sqlite3.connect(path)
        row = conn.execute("SELECT status, latency_ms, completion_tokens, estimated FROM "
                           "requests WHERE id = ?", (rid,)).fetchone()
        conn.close()
        if row:
            break
        await asyncio.sleep(0.05)
    assert row is not None
    status, latency_ms, completion, estimated = row
    assert status == 499
    assert latency_ms < 2000 and time.monotonic() - t0 < 3
    assert completion > 0 and estimated == 1  # partial usage, counted locally
    _ = Path


async def test_client_disconnect_cancels_a_non_streaming_call(
        gw3: GatewayThread, c3: httpx.AsyncClient, m3: Mocks) -> None:
    """A client that gives up on a JSON answer cancels the upstream call too (it used to run
    to completion - an embedded model's slot held, a hosted model generating for nobody)."""
    a, _, _ = m3
    a.script(latency=3.0)
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await c3.post("/chat/completions", json={"model": "small-a", "messages": MSG},
                      timeout=0.4)
    path = gw3.app.config.request_log_path()
    row = None
    for _ in range(60):
        conn = sqlite3.connect(path)
        row = conn.execute("SELECT status, latency_ms FROM requests WHERE status = 499 AND "
                           "requested_model = 'small-a' AND latency_ms < 2000").fetchone()
        conn.close()
        if row:
            break
        await asyncio.sleep(0.05)
    conn = sqlite3.connect(path)
    last = conn.execute("SELECT status, deployment, stream, latency_ms FROM requests "
                        "ORDER BY ts DESC LIMIT 3").fetchall()
    conn.close()
    assert row is not None, f"the abandoned call was not cancelled: {last}"
    assert time.monotonic() - t0 < 2.5

