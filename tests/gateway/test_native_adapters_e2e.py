"""Anthropic and Replicate behind the gateway: an OpenAI client talks to them through
tierline (translation both ways, streaming, tool calls, cache-token pricing, errors)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import openai
import pytest

from tests.mocks.anthropic_server import MockAnthropic
from tests.mocks.replicate_server import MockReplicate
from tierline.config import parse_config
from tierline.gateway.server import GatewayThread


@pytest.fixture(scope="module")
async def natives() -> AsyncIterator[tuple[MockAnthropic, MockReplicate]]:
    a, r = MockAnthropic(), MockReplicate()
    await a.start()
    await r.start()
    yield a, r
    await a.stop()
    await r.stop()


@pytest.fixture(scope="module")
def ngw(natives: tuple[MockAnthropic, MockReplicate],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    a, r = natives
    tmp = tmp_path_factory.mktemp("native")
    cfg = parse_config({
        "server": {"request_log": str(tmp / "n.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {
            "anthropic": {"wire": "anthropic", "base_url": a.url, "api_key": "sk-ant-test"},
            "replicate": {"wire": "replicate", "base_url": r.url + "/v1", "api_key": "r8_x"},
        },
        "deployments": [
            {"name": "anthropic/claude", "provider": "anthropic", "model": "claude-x",
             "price": {"input": 3, "cached_input": 0.3, "cache_write": 3.75, "output": 15},
             "capabilities": ["streaming", "tools", "vision"]},
            {"name": "replicate/llama", "provider": "replicate", "model": "meta/llama-x",
             "price": {"input": 0.65, "output": 2.75}},
        ],
        "resilience": {"retries": 0},
    }, "native")
    with GatewayThread(cfg) as g:
        yield g


async def test_anthropic_via_openai_client(ngw: GatewayThread,
                                           natives: tuple[MockAnthropic, MockReplicate]) -> None:
    a, _ = natives
    client = openai.AsyncOpenAI(base_url=ngw.base_url, api_key="unused")
    a.script(text="Bonjour", input_tokens=100, cache_read_input_tokens=1000,
             cache_creation_input_tokens=50, output_tokens=20)
    raw = await client.chat.completions.with_raw_response.create(
        model="anthropic/claude", max_tokens=64,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Say hello in French"}])
    c = raw.parse()
    assert c.choices[0].message.content == "Bonjour"
    assert c.usage is not None and c.usage.prompt_tokens == 1150
    sent = a.requests[-1].json
    assert sent["system"] and sent["max_tokens"] == 64 and sent["model"] == "claude-x"
    want = (Decimal(100) * 3 + Decimal(1000) * Decimal("0.3") + Decimal(50) * Decimal("3.75")
            + Decimal(20) * 15) / 1_000_000
    assert Decimal(raw.headers["x-tierline-cost-usd"]) == want

    a.script(tool_calls=[("get_weather", {"city": "Paris"})])
    stream = await client.chat.completions.create(
        model="anthropic/claude", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}])
    args, name, usage, finish = "", None, None, None
    async for ch in stream:
        if ch.usage:
            usage = ch.usage
        for choice in ch.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                name = tc.function.name if tc.function and tc.function.name else name
                args += (tc.function.arguments or "") if tc.function else ""
    assert name == "get_weather" and json.loads(args) == {"city": "Paris"}
    assert finish == "tool_calls" and usage is not None
    await client.close()


async def test_anthropic_overloaded_is_retryable_502_then_error_shape(
        ngw: GatewayThread, natives: tuple[MockAnthropic, MockReplicate]) -> None:
    a, _ = natives
    a.script(status=529, error_type="overloaded_error", error_message="Overloaded")
    client = openai.AsyncOpenAI(base_url=ngw.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        await client.chat.completions.create(
            model="anthropic/claude", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    assert "sk-ant-test" not in str(e.value.body)
    await client.close()


async def test_anthropic_overloaded_after_message_start_fails_over(
        ngw: GatewayThread, natives: tuple[MockAnthropic, MockReplicate]) -> None:
    """Anthropic's documented overload pattern: `message_start`, then an `error` event.
    Nothing has reached the client yet, so the stream fails over."""
    a, r = natives
    a.script(stream_error=("overloaded_error", "Overloaded"), error_after=1)
    r.script(output=["from", " replicate"])
    import httpx

    async with httpx.AsyncClient(base_url=ngw.base_url, timeout=30) as c, c.stream(
            "POST", "/chat/completions", json={
                "model": "anthropic/claude,replicate/llama", "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
                "tierline": {"strategy": "ordered"}}) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-tierline-model"] == "replicate/llama"
        body = "".join([ln async for ln in resp.aiter_lines()])
    assert '"error"' not in body and "from" in body


async def test_replicate_via_openai_client(ngw: GatewayThread,
                                           natives: tuple[MockAnthropic, MockReplicate]) -> None:
    _, r = natives
    client = openai.AsyncOpenAI(base_url=ngw.base_url, api_key="unused")
    r.script(output=["Hel", "lo ", "world"],
             metrics={"input_token_count": 12, "output_token_count": 3})
    c = await client.chat.completions.create(
        model="replicate/llama", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert c.choices[0].message.content == "Hello world"
    assert c.usage is not None and c.usage.completion_tokens == 3
    r.script(output=["a", "b", "c"], metrics={"input_token_count": 5, "output_token_count": 3})
    stream = await client.chat.completions.create(
        model="replicate/llama", stream=True, messages=[{"role": "user", "content": "hi"}])
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "abc"
    await client.close()


_USER = {"role": "user", "content": "x"}
_TOOLS = [{"type": "function", "function": {"name": "f"}}]


@pytest.mark.parametrize(("extra", "param"), [
    ({"messages": [_USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": "f"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"}]},
     "messages[1].tool_calls[0]"),
    ({"messages": [_USER, {"role": "assistant", "tool_calls": 5}]}, "messages[1].tool_calls"),
    ({"messages": [_USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [_USER, {"role": "tool", "tool_call_id": 7, "content": "r"}]},
     "messages[1].tool_call_id"),
    ({"tools": _TOOLS, "tool_choice": {"type": "function", "function": "f"}},
     "tool_choice.function"),
    ({"tools": _TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": "x"}},
     "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": [1]}, "stream": True},
     "response_format.json_schema"),
])
@pytest.mark.parametrize("model", ["anthropic/claude", "replicate/llama"])
async def test_malformed_tool_and_format_shapes_are_named_400s(
        ngw: GatewayThread, model: str, extra: dict[str, object], param: str) -> None:
    """Shapes the adapters rely on are checked once, before any adapter sees them (these
    were 500s from the Anthropic adapter and from the validator itself)."""
    import httpx

    body = {"model": model, "messages": [_USER], **extra}
    async with httpx.AsyncClient(base_url=ngw.base_url) as c:
        r = await c.post("/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
