"""Every strategy and filter, through the HTTP API, with a test predictor registered in
place of the learned router (the real one is tested in tests/routing/learned/)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.mocks.openai_server import MockOpenAI
from tierline.config import parse_config
from tierline.gateway.app import create_app
from tierline.gateway.server import GatewayThread

STRONG, WEAK = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"


class FakePredictor:
    """Hard prompts (containing 'prove') are beyond the weak model."""

    profiles = [STRONG, WEAK]

    def predict(self, text: str) -> dict[str, float]:
        if "prove" in text:
            return {STRONG: 0.9, WEAK: 0.4}
        return {STRONG: 0.95, WEAK: 0.85}


Mocks = tuple[MockOpenAI, MockOpenAI, MockOpenAI]


@pytest.fixture(scope="module")
async def ms() -> AsyncIterator[Mocks]:
    out = (MockOpenAI(), MockOpenAI(), MockOpenAI())
    for m in out:
        await m.start()
    yield out
    for m in out:
        await m.stop()


@pytest.fixture(scope="module")
def gw(ms: Mocks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    tmp: Path = tmp_path_factory.mktemp("strat")
    t = {"requires_key": False}
    raw = {
        "server": {"request_log": str(tmp / "r.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {
            "us1": {"base_url": ms[0].url + "/v1", "region": "us", **t},
            "eu1": {"base_url": ms[1].url + "/v1", "region": "eu", "zero_data_retention": True,
                    **t},
            "us2": {"base_url": ms[2].url + "/v1", "region": "us", "trains_on_inputs": True,
                    **t},
        },
        "deployments": [
            {"name": "strong", "provider": "us1", "model": "s",
             "price": {"input": 10, "output": 30}, "tier": "frontier",
             "capabilities": ["streaming", "tools", "json_schema", "vision"], "weight": 3},
            {"name": "weak-eu", "provider": "eu1", "model": "w", "open_weight": True,
             "price": {"input": 0.6, "output": 0.6}, "tier": "fast",
             "capabilities": ["streaming", "tools"], "weight": 1},
            {"name": "mid", "provider": "us2", "model": "m", "profile": WEAK,
             "price": {"input": 1, "output": 2}, "tier": "fast", "context_window": 1000,
             "capabilities": ["streaming"], "weight": 0},
        ],
        "routing": {"strategy": "learned", "quality": 0.7},
    }
    app = create_app(parse_config(raw, "strat"), predictor=FakePredictor())
    with GatewayThread(app=app) as g:
        yield g


@pytest.fixture
async def client(gw: GatewayThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as c:
        yield c


async def ask(c: httpx.AsyncClient, text: str = "hello", model: str = "auto",
              headers: dict[str, str] | None = None, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return await c.post("/chat/completions", json=body, headers=headers or {})


async def test_learned_sends_easy_prompts_to_the_cheap_model(client: httpx.AsyncClient) -> None:
    r = await ask(client, "what is the capital of France")
    assert r.headers["x-tierline-model"] == "weak-eu"
    assert r.headers["x-tierline-route"].startswith("learned: weak-eu (q=0.85>=0.7")
    r = await ask(client, "prove that sqrt(2) is irrational")
    assert r.headers["x-tierline-model"] == "strong"


async def test_learned_router_reads_the_users_turns_only(client: httpx.AsyncClient) -> None:
    """As in training (routing-outcomes prompts are user turns): a system prompt or an earlier
    assistant answer does not move the route; user text in content parts does."""
    sys_msgs = [{"role": "system", "content": "you may be asked to prove things"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "I can prove it"},
                {"role": "user", "content": "what is the capital of France"}]
    r = await client.post("/chat/completions", json={"model": "auto", "messages": sys_msgs})
    assert r.headers["x-tierline-model"] == "weak-eu"
    parts = [{"role": "user", "content": [{"type": "text", "text": "prove Fermat"}]}]
    r = await client.post("/chat/completions", json={"model": "auto", "messages": parts})
    assert r.headers["x-tierline-model"] == "strong"


async def test_quality_knob_body_and_header(client: httpx.AsyncClient) -> None:
    r = await ask(client, "easy one", tierline={"quality": 0.9})
    assert r.headers["x-tierline-model"] == "strong"
    r = await ask(client, "easy one", headers={"x-tierline-quality": "0.9"})
    assert r.headers["x-tierline-model"] == "strong"
    r = await ask(client, "prove it", tierline={"quality": 0.3})
    assert r.headers["x-tierline-model"] == "weak-eu"
    # the body wins over a header, also when they name different knobs (was a 400)
    r = await ask(client, "easy one", headers={"x-tierline-max-loss": "0.5"},
                  tierline={"quality": 0.9})
    assert r.status_code == 200 and r.headers["x-tierline-model"] == "strong"
    r = await ask(client, "easy one", headers={"x-tierline-max-loss": "0.5",
                                                "x-tierline-quality": "0.9"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "x-tierline-quality"


async def test_cost_weight(client: httpx.AsyncClient) -> None:
    # q - λ·cost: with a huge λ the cheapest wins even on hard prompts
    # hard prompt: predicted gain of the strong model 0.9 - 0.4 = 0.5; cost ratio ~0.03
    r = await ask(client, "prove it", tierline={"cost_weight": 0.6})
    assert r.headers["x-tierline-model"] == "weak-eu"
    r = await ask(client, "prove it", tierline={"cost_weight": 0.4})
    assert r.headers["x-tierline-model"] == "strong"
    # easy prompt: gain 0.95 - 0.85 = 0.1
    r = await ask(client, "easy", tierline={"cost_weight": 0.2})
    assert r.headers["x-tierline-model"] == "weak-eu"
    r = await ask(client, "easy", tierline={"cost_weight": 0.05})
    assert r.headers["x-tierline-model"] == "strong"


async def test_cheapest_ordered_and_sorts(client: httpx.AsyncClient) -> None:
    r = await ask(client, "prove it", tierline={"strategy": "cheapest"})
    assert r.headers["x-tierline-model"] == "weak-eu"
    r = await ask(client, "x", headers={"x-tierline-sort": "price"})
    assert r.headers["x-tierline-model"] == "weak-eu"
    r = await ask(client, "x", tierline={"sort": "quality"})
    assert r.headers["x-tierline-model"] == "strong"
    r = await ask(client, "x", model="mid,strong", tierline={"strategy": "ordered"})
    assert r.headers["x-tierline-model"] == "mid"


async def test_weighted(client: httpx.AsyncClient) -> None:
    got: Counter[str] = Counter()
    for _ in range(80):
        r = await ask(client, "x", model="strong,weak-eu", tierline={"strategy": "weighted"})
        got[r.headers["x-tierline-model"]] += 1
    assert got["strong"] > got["weak-eu"] > 0  # 3:1 weights


async def test_fastest_uses_live_latency(client: httpx.AsyncClient, ms: Mocks) -> None:
    ms[0].reset()
    ms[1].reset()
    for _ in range(30):
        ms[0].script(latency=0.05)
    for _ in range(4):  # measure both
        await ask(client, "x", model="strong,weak-eu", tierline={"strategy": "ordered"})
        await ask(client, "x", model="weak-eu,strong", tierline={"strategy": "ordered"})
    r = await ask(client, "x", model="strong,weak-eu", tierline={"strategy": "fastest"})
    assert r.headers["x-tierline-model"] == "weak-eu"
    r = await ask(client, "x", model="strong,weak-eu", headers={"x-tierline-sort": "latency"})
    assert r.headers["x-tierline-model"] == "weak-eu"
    ms[0].reset()


@pytest.mark.parametrize(("controls", "kwargs", "want", "reason"), [
    ({"region": "eu"}, {}, "weak-eu", None),
    ({"zdr": True}, {}, "weak-eu", None),
    ({"no_training": True, "models": ["mid"]}, {}, None, "mid: may train on inputs"),
    ({"open_weight": True}, {}, "weak-eu", None),
    ({"region": "us", "models": ["weak-eu"]}, {}, None, "weak-eu: region 'eu' is not 'us'"),
    ({}, {"response_format": {"type": "json_schema", "json_schema": {"name": "s",
                                                                      "schema": {}}}},
     "strong", None),
    ({}, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     "strong", None),
    ({"models": ["mid"]}, {"max_tokens": 2000}, None, "mid: context window 1000 <"),
    ({"max_cost_usd": 0.0001, "models": ["strong"]}, {"max_tokens": 1000}, None,
     "strong: worst-case cost"),
    # n choices are billed n times the output: within the cap for one, not for two
    ({"max_cost_usd": 0.0001, "models": ["weak-eu"]}, {"max_tokens": 100}, "weak-eu", None),
    ({"max_cost_usd": 0.0001, "models": ["weak-eu"]}, {"max_tokens": 100, "n": 2}, None,
     "weak-eu: worst-case cost"),
])
async def test_hard_filters(client: httpx.AsyncClient, controls: dict[str, object],
                            kwargs: dict[str, object], want: str | None,
                            reason: str | None) -> None:
    body: dict[str, object] = {"model": "auto",
                               "messages": [{"role": "user", "content": "prove it"}],
                               "tierline": controls, **kwargs}
    r = await client.post("/chat/completions", json=body)
    if want is not None:
        assert r.status_code == 200, r.text
        assert r.headers["x-tierline-model"] == want
    else:
        assert r.status_code == 503
        assert reason is not None and reason in r.json()["error"]["message"]


async def test_fallbacks_off_and_chain_in_log(gw: GatewayThread, client: httpx.AsyncClient,
                                              ms: Mocks) -> None:
    ms[1].reset()
    for _ in range(2):  # the first try and its retry
        ms[1].script(status=500, error_message="down")
    r = await ask(client, "easy", tierline={"fallbacks": False})
    assert r.status_code == 502
    for _ in range(2):
        ms[1].script(status=500, error_message="down")
    r = await ask(client, "easy")
    assert r.status_code == 200 and r.headers["x-tierline-model"] != "weak-eu"
    rid = r.headers["x-request-id"]
    await asyncio.sleep(0.3)
    conn = sqlite3.connect(gw.app.config.request_log_path())
    detail = json.loads(conn.execute("SELECT route_detail FROM requests WHERE id = ?",
                                     (rid,)).fetchone()[0])
    conn.close()
    assert detail["chain"][0] == "weak-eu"
    assert detail["scores"]["weak-eu"]["quality"] == 0.85
    assert detail["attempts"][0]["deployment"] == "weak-eu"
    assert set(detail["candidates"]) == {"strong", "weak-eu", "mid"}


async def test_fastest_ranks_a_failing_deployment_last(ms: Mocks, tmp_path: Path) -> None:
    """A deployment that only fails is never measured by a success; its failures count as
    first tokens at its first-token timeout, so `fastest` stops trying it first (it used
    to stay "unmeasured, explore first" forever, costing every request a failed attempt)."""
    ms[0].reset()
    ms[1].reset()
    for _ in range(20):
        ms[0].script(status=503, error_message="down")
    raw = {
        "server": {"request_log": str(tmp_path / "f.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {"p0": {"base_url": ms[0].url + "/v1", "requires_key": False,
                             "first_token_timeout": 5},
                      "p1": {"base_url": ms[1].url + "/v1", "requires_key": False}},
        "deployments": [{"name": "flaky", "provider": "p0", "model": "a"},
                        {"name": "steady", "provider": "p1", "model": "b"}],
        "routing": {"strategy": "fastest"},
        "resilience": {"retries": 0, "breaker_failures": 1000},
    }
    with GatewayThread(app=create_app(parse_config(raw, "fast"))) as g:
        async with httpx.AsyncClient(base_url=g.base_url, timeout=30) as c:
            routes = []
            for _ in range(4):
                r = await ask(c, "x", model="flaky,steady")
                assert r.status_code == 200 and r.headers["x-tierline-model"] == "steady"
                routes.append(r.headers["x-tierline-route"])
            stats = {d["name"]: d for d in (await c.get("/deployments")).json()["data"]}
    assert len(ms[0].requests) == 1, routes  # tried once, then ranked behind steady
    assert routes[-1].startswith("fastest: steady")
    assert stats["flaky"]["ttft_ewma_s"] == 5.0
    ms[0].reset()


async def test_stream_requests_skip_deployments_without_streaming(ms: Mocks,
                                                                   tmp_path: Path) -> None:
    ms[0].reset()
    ms[1].reset()
    raw = {
        "server": {"request_log": str(tmp_path / "s.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {"p0": {"base_url": ms[0].url + "/v1", "requires_key": False},
                      "p1": {"base_url": ms[1].url + "/v1", "requires_key": False}},
        "deployments": [
            {"name": "batch-only", "provider": "p0", "model": "a", "capabilities": ["tools"],
             "price": {"input": 0.1, "output": 0.1}},
            {"name": "streamer", "provider": "p1", "model": "b",
             "price": {"input": 1, "output": 1}}],
        "routing": {"strategy": "cheapest"},
    }
    with GatewayThread(app=create_app(parse_config(raw, "st"))) as g:
        async with httpx.AsyncClient(base_url=g.base_url, timeout=30) as c:
            r = await ask(c, "x", model="batch-only,streamer")
            assert r.headers["x-tierline-model"] == "batch-only"
            r = await ask(c, "x", model="batch-only,streamer", stream=True)
            assert r.status_code == 200 and r.headers["x-tierline-model"] == "streamer"
            assert "1 filtered" in r.headers["x-tierline-route"]
            r = await ask(c, "x", model="batch-only", stream=True)
            assert r.status_code == 503
            assert "batch-only: lacks capability streaming" in r.json()["error"]["message"]


async def test_models_control_narrows_and_names_what_it_removed(
        client: httpx.AsyncClient) -> None:
    r = await ask(client, "x", tierline={"models": ["nope/x"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tierline.models"
    r = await ask(client, "x", model="strong", tierline={"models": ["weak-eu"]})
    assert r.status_code == 503
    assert "strong: not in the 'models' control" in r.json()["error"]["message"]
    r = await ask(client, "prove it", tierline={"models": ["weak-eu", "mid"],
                                                "strategy": "ordered"})
    assert r.status_code == 200 and r.headers["x-tierline-model"] == "weak-eu"
    assert "1 filtered" in r.headers["x-tierline-route"]
