"""The chat endpoint over real HTTP: pass-through, streaming, headers, exact cost."""

from __future__ import annotations

from decimal import Decimal

import httpx
import orjson

from tests.mocks.openai_server import MockOpenAI

MSG = [{"role": "user", "content": "Hello there"}]


def cost(prompt: int, cached: int, completion: int, p_in: str, p_cached: str, p_out: str
         ) -> Decimal:
    m = Decimal(1_000_000)
    return ((prompt - cached) * Decimal(p_in) + cached * Decimal(p_cached)
            + completion * Decimal(p_out)) / m


async def test_non_streaming_passthrough_and_headers(
        client: httpx.AsyncClient, fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, _ = fresh_mocks
    a.script(text="Paris.", prompt_tokens=1200, cached_tokens=200, completion_tokens=7)
    body = {"model": "a/strong", "messages": MSG, "temperature": 0.3, "top_p": 0.9,
            "max_completion_tokens": 50, "stop": ["\n\n"], "seed": 7, "n": 1,
            "user": "u1", "logprobs": False,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": "auto",
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "x", "schema": {"type": "object"}}}}
    r = await client.post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Paris."
    assert r.headers["x-tierline-model"] == "a/strong"
    assert r.headers["x-request-id"].startswith("req_")
    assert "x-tierline-route" in r.headers
    assert Decimal(r.headers["x-tierline-cost-usd"]) == cost(1200, 200, 7, "2.5", "1.25", "10")
    sent = a.requests[-1].json
    assert sent["model"] == "strong-1"
    for k in ("temperature", "top_p", "max_completion_tokens", "stop", "seed", "n", "user",
              "logprobs", "tools", "tool_choice", "response_format"):
        assert sent[k] == body[k], k
    assert "stream" not in sent


async def test_streaming_with_usage(client: httpx.AsyncClient,
                                    fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, _ = fresh_mocks
    a.script(text="one two three four", chunks=4, prompt_tokens=30, completion_tokens=4)
    async with client.stream("POST", "/chat/completions", json={
            "model": "a/strong", "messages": MSG, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [orjson.loads(ln[6:]) for ln in lines[:-1]]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks
                   if c["choices"])
    assert text == "one two three four"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["prompt_tokens"] == 30 and usage["completion_tokens"] == 4
    assert Decimal(usage["cost_usd"]) == cost(30, 0, 4, "2.5", "1.25", "10")
    assert a.requests[-1].json["stream_options"] == {"include_usage": True}


async def test_streaming_without_usage_still_forces_upstream_usage(
        client: httpx.AsyncClient, fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, _ = fresh_mocks
    a.script(text="hi", chunks=2)
    async with client.stream("POST", "/chat/completions", json={
            "model": "a/strong", "messages": MSG, "stream": True}) as r:
        lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
    chunks = [orjson.loads(ln[6:]) for ln in lines[:-1]]
    assert all("usage" not in c or c["usage"] is None for c in chunks)
    assert a.requests[-1].json["stream_options"]["include_usage"] is True


async def test_provider_key_is_sent_but_never_echoed(
        client: httpx.AsyncClient, fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    _, b = fresh_mocks
    r = await client.post("/chat/completions", json={"model": "b/fast", "messages": MSG})
    assert r.status_code == 200
    assert b.requests[-1].header("authorization") == "Bearer sk-secret-b"
    b.script(status=401, error_message="Incorrect API key provided: sk-secr****")
    r = await client.post("/chat/completions", json={"model": "b/fast", "messages": MSG})
    assert r.status_code == 502
    assert "sk-secret-b" not in r.text


async def test_tier_group_and_list_names(client: httpx.AsyncClient,
                                         fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    for name, want in (("tier:fast", "b/fast"), ("tier:strong", "a/strong")):
        r = await client.post("/chat/completions", json={"model": name, "messages": MSG})
        assert r.status_code == 200 and r.headers["x-tierline-model"] == want
    r = await client.post("/chat/completions", json={
        "model": "a/strong,b/fast", "messages": MSG, "tierline": {"strategy": "ordered"}})
    assert r.headers["x-tierline-model"] == "a/strong"
