"""The embedded SmolLM2 model through the gateway with the official `openai` client."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tierline.config import parse_config
from tierline.gateway.server import GatewayThread

LOCAL = "local/smollm2-135m-instruct"


async def test_openai_client_non_streaming_and_streaming(gateway: GatewayThread) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused")
    r = await client.chat.completions.with_raw_response.create(
        model=LOCAL, max_tokens=16, temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert r.headers["x-tierline-model"] == LOCAL
    c = r.parse()
    assert c.choices[0].message.content and len(c.choices[0].message.content) > 3
    assert c.usage is not None and 0 < c.usage.completion_tokens <= 16
    stream = await client.chat.completions.create(
        model=LOCAL, max_tokens=16, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Say hello."}])
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert len(pieces) > 2 and "".join(pieces).strip()
    assert usage is not None and usage.completion_tokens > 0
    await client.close()


async def test_auto_with_open_weight_and_region_controls(gateway: GatewayThread) -> None:
    """`auto` restricted to local data handling picks the embedded model."""
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused")
    r = await client.chat.completions.with_raw_response.create(
        model="auto", max_tokens=8,
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"tierline": {"region": "local", "zdr": True}})
    assert r.headers["x-tierline-model"] == LOCAL
    await client.close()


async def test_full_local_queue_is_a_429_with_retry_after(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("queue")
    cfg = parse_config({
        "server": {"request_log": str(tmp / "q.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {"local": {"wire": "embedded", "requires_key": False}},
        "deployments": [{"name": LOCAL, "provider": "local", "model": "x.gguf",
                         "n_ctx": 1024, "parallel": 1, "queue_size": 1}],
    }, "queue")
    with GatewayThread(cfg) as gw:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=120) as c:
            body = {"model": LOCAL, "max_tokens": 40, "temperature": 0,
                    "messages": [{"role": "user", "content": "Tell me a story."}]}
            rs = await asyncio.gather(*(c.post("/chat/completions", json=body)
                                        for _ in range(5)))
    codes = sorted(r.status_code for r in rs)
    assert 200 in codes and 429 in codes, codes
    busy = next(r for r in rs if r.status_code == 429)
    assert int(busy.headers["retry-after"]) >= 1
    assert busy.json()["error"]["code"] == "model_overloaded"
