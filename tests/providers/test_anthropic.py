from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.mocks.anthropic_server import MockAnthropic
from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamBadResponse,
    UpstreamConnectionError,
    UpstreamStatusError,
)
from tierline.providers.anthropic import AnthropicProvider
from tierline.providers.base import Provider
from tierline.types import ChatRequest, StreamChunk

DEP = Deployment(name="anthropic/claude-test", provider="anthropic", model="claude-test-1",
                 max_output_tokens=2048)


@pytest.fixture
async def mock() -> AsyncIterator[MockAnthropic]:
    async with MockAnthropic() as m:
        yield m  # type: ignore[misc]


@pytest.fixture
async def provider(mock: MockAnthropic) -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider(ProviderSpec(name="anthropic", wire="anthropic", base_url=mock.url,
                                       api_key="sk-ant-test", headers={"x-extra": "1"}))
    yield p
    await p.aclose()


def req(**body: Any) -> ChatRequest:
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    body.setdefault("model", "anything")
    return ChatRequest(body=body, model=body["model"], stream=bool(body.get("stream")))


async def collect(p: AnthropicProvider, r: ChatRequest) -> list[StreamChunk]:
    return [c async for c in p.stream(r, DEP)]


def sent(m: MockAnthropic) -> dict[str, Any]:
    return m.requests[-1].json  # type: ignore[no-any-return]


# -- request translation --------------------------------------------------------------------

async def test_is_a_provider(provider: AnthropicProvider) -> None:
    assert isinstance(provider, Provider)


async def test_headers_url_and_defaults(provider: AnthropicProvider, mock: MockAnthropic
                                        ) -> None:
    await provider.complete(req(), DEP)
    r = mock.requests[-1]
    assert r.path == "/v1/messages"
    assert r.header("x-api-key") == "sk-ant-test"
    assert r.header("anthropic-version") == "2023-06-01"
    assert r.header("x-extra") == "1"
    assert r.header("authorization") is None
    body = r.json
    assert body == {"model": "claude-test-1", "max_tokens": 2048,
                    "messages": [{"role": "user", "content": "Hi"}]}


async def test_max_tokens_default_4096_and_overrides(provider: AnthropicProvider,
                                                     mock: MockAnthropic) -> None:
    dep = DEP.model_copy(update={"max_output_tokens": None})
    await provider.complete(req(), dep)
    assert sent(mock)["max_tokens"] == 4096
    await provider.complete(req(max_tokens=100), dep)
    assert sent(mock)["max_tokens"] == 100
    await provider.complete(req(max_tokens=100, max_completion_tokens=50), dep)
    assert sent(mock)["max_tokens"] == 50


async def test_system_params_and_conversation(provider: AnthropicProvider,
                                              mock: MockAnthropic) -> None:
    body = dict(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        ],
        temperature=1.7, top_p=0.9, stop="END", user="u-42", stream_options=None,
        seed=3, presence_penalty=0,
    )
    r = req(**body)
    before = orjson.dumps(r.body)
    await provider.complete(r, DEP)
    assert orjson.dumps(r.body) == before  # the request body is not mutated
    b = sent(mock)
    assert b["system"] == "Be brief.\n\nBe kind."
    assert b["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Weather?"},
    ]
    assert b["temperature"] == 1.0  # clamped to Anthropic's range
    assert b["top_p"] == 0.9
    assert b["stop_sequences"] == ["END"]
    assert b["metadata"] == {"user_id": "u-42"}
    await provider.complete(req(stop=["a", "b"]), DEP)
    assert sent(mock)["stop_sequences"] == ["a", "b"]
    # Claude 4.x refuse temperature + top_p: an SDK's no-op top_p 1 is not sent
    await provider.complete(req(temperature=0.7, top_p=1), DEP)
    b = sent(mock)
    assert b["temperature"] == 0.7 and "top_p" not in b
    await provider.complete(req(top_p=1), DEP)
    assert sent(mock)["top_p"] == 1


async def test_images(provider: AnthropicProvider, mock: MockAnthropic) -> None:
    await provider.complete(req(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg",
                                            "detail": "high"}},
    ]}]), DEP)
    assert sent(mock)["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


async def test_tools_tool_calls_and_results_merge(provider: AnthropicProvider,
                                                  mock: MockAnthropic) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "now"}}]
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2",
         "content": [{"type": "text", "text": "21C"}]},
        {"role": "user", "content": "Thanks. Which is warmer?"},
    ]
    await provider.complete(req(messages=messages, tools=tools, tool_choice="auto",
                                parallel_tool_calls=False), DEP)
    b = sent(mock)
    assert b["tools"] == [
        {"name": "get_weather", "description": "Weather for a city",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}]
    assert b["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert b["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather",
             "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2",
             "content": [{"type": "text", "text": "21C"}]},
            {"type": "text", "text": "Thanks. Which is warmer?"}]},
    ]


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
])
async def test_tool_choice(provider: AnthropicProvider, mock: MockAnthropic, choice: Any,
                           expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object"}}}]
    await provider.complete(req(tools=tools, tool_choice=choice), DEP)
    assert sent(mock)["tool_choice"] == expected


async def test_json_schema_becomes_forced_tool(provider: AnthropicProvider,
                                               mock: MockAnthropic) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"]}
    mock.script(text=None, tool_calls=[("json_response", {"answer": 4})])
    r = req(response_format={"type": "json_schema",
                             "json_schema": {"name": "math", "schema": schema}})
    resp = await provider.complete(r, DEP)
    b = sent(mock)
    assert b["tools"][0]["name"] == "json_response"
    assert b["tools"][0]["input_schema"] == schema
    assert b["tool_choice"] == {"type": "tool", "name": "json_response"}
    msg = resp.body["choices"][0]
    assert orjson.loads(msg["message"]["content"]) == {"answer": 4}
    assert "tool_calls" not in msg["message"]
    assert msg["finish_reason"] == "stop"
    # streamed: the tool input arrives as content
    mock.script(text=None, tool_calls=[("json_response", {"answer": 4})], chunks=4)
    chunks = await collect(provider, r)
    text = "".join(c.data["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c.data["choices"])
    assert orjson.loads(text) == {"answer": 4}
    assert chunks[-2].data["choices"][0]["finish_reason"] == "stop"


async def test_json_object_and_schema_with_tools_use_instruction(
        provider: AnthropicProvider, mock: MockAnthropic) -> None:
    await provider.complete(req(response_format={"type": "json_object"}), DEP)
    assert "JSON" in sent(mock)["system"]
    tools = [{"type": "function", "function": {"name": "f"}}]
    await provider.complete(req(tools=tools, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}),
        DEP)
    b = sent(mock)
    assert [t["name"] for t in b["tools"]] == ["f"]
    assert "JSON schema" in b["system"]


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logit_bias": {"1": 2}}, "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tool_choice"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "ftp://x/y.png"}}]}]}, "messages[0].content[0].image_url"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                           "function": {"name": "f",
                                                                        "arguments": "{bad"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
])
async def test_untranslatable_requests_rejected(provider: AnthropicProvider,
                                                mock: MockAnthropic, body: dict[str, Any],
                                                param: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        await provider.complete(req(**body), DEP)
    assert ei.value.param == param
    assert mock.requests == []  # nothing was sent


# -- response translation -------------------------------------------------------------------

async def test_text_response_and_usage_with_cache(provider: AnthropicProvider,
                                                  mock: MockAnthropic) -> None:
    mock.script(text="Paris.", input_tokens=10, cache_read_input_tokens=100,
                cache_creation_input_tokens=20, output_tokens=3, model="claude-test-1-2025")
    resp = await provider.complete(req(), DEP)
    assert resp.body["object"] == "chat.completion"
    assert resp.body["model"] == "claude-test-1-2025"
    assert resp.body["id"].startswith("msg_")
    choice = resp.body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Paris.", "refusal": None}
    assert choice["finish_reason"] == "stop"
    u = resp.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens) == \
        (130, 3, 100, 20)
    assert not u.estimated
    assert resp.body["usage"] == {"prompt_tokens": 130, "completion_tokens": 3,
                                  "total_tokens": 133,
                                  "prompt_tokens_details": {"cached_tokens": 100}}


async def test_tool_call_response(provider: AnthropicProvider, mock: MockAnthropic) -> None:
    mock.script(text="Let me check.", tool_calls=[
        ("toolu_A", "get_weather", {"city": "Paris"}), ("toolu_B", "now", {})])
    resp = await provider.complete(req(), DEP)
    choice = resp.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    tcs = choice["message"]["tool_calls"]
    assert [(t["id"], t["type"], t["function"]["name"]) for t in tcs] == [
        ("toolu_A", "function", "get_weather"), ("toolu_B", "function", "now")]
    assert orjson.loads(tcs[0]["function"]["arguments"]) == {"city": "Paris"}
    assert tcs[1]["function"]["arguments"] == "{}"
    mock.script(text=None, tool_calls=[("f", {"x": 1})])
    resp = await provider.complete(req(), DEP)
    assert resp.body["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"),
])
async def test_stop_reasons(provider: AnthropicProvider, mock: MockAnthropic, stop: str,
                            finish: str) -> None:
    mock.script(stop_reason=stop)
    resp = await provider.complete(req(), DEP)
    assert resp.body["choices"][0]["finish_reason"] == finish
    mock.script(stop_reason=stop)
    chunks = await collect(provider, req())
    assert chunks[-2].data["choices"][0]["finish_reason"] == finish


async def test_thinking_blocks_dropped(provider: AnthropicProvider, mock: MockAnthropic
                                       ) -> None:
    blocks = [{"type": "thinking", "thinking": "hmm", "signature": "s"},
              {"type": "text", "text": "42"}]
    mock.script(content=blocks)
    resp = await provider.complete(req(), DEP)
    assert resp.body["choices"][0]["message"]["content"] == "42"
    mock.script(content=blocks)
    chunks = await collect(provider, req())
    text = "".join(c.data["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c.data["choices"])
    assert text == "42"


# -- streaming ------------------------------------------------------------------------------

async def test_stream_text(provider: AnthropicProvider, mock: MockAnthropic) -> None:
    mock.script(text="Hello there, world", chunks=3, input_tokens=9, output_tokens=4,
                cache_read_input_tokens=6, cache_creation_input_tokens=1)
    chunks = await collect(provider, req(stream=True))
    assert mock.requests[-1].json["stream"] is True
    assert mock.requests[-1].header("accept") == "text/event-stream"
    assert all(c.data["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c.data["id"] for c in chunks}) == 1
    assert chunks[0].data["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c.data["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert len(deltas) == 3
    assert "".join(deltas) == "Hello there, world"  # type: ignore[arg-type]
    fin = chunks[-2]
    assert fin.data["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                      "finish_reason": "stop"}
    last = chunks[-1]
    assert last.data["choices"] == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.cached_tokens,
            last.usage.cache_write_tokens) == (16, 4, 6, 1)
    assert last.data["usage"]["total_tokens"] == 20
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_tool_calls_reassemble(provider: AnthropicProvider,
                                            mock: MockAnthropic) -> None:
    args1 = {"city": "Paris", "units": "celsius", "days": [1, 2, 3]}
    mock.script(text="Checking.", tool_calls=[("toolu_1", "get_weather", args1),
                                              ("toolu_2", "now", {"tz": "UTC"})], chunks=5)
    chunks = await collect(provider, req(stream=True))
    calls: dict[int, dict[str, Any]] = {}
    fragments = 0
    for c in chunks:
        if not c.data["choices"]:
            continue
        for tc in c.data["choices"][0]["delta"].get("tool_calls") or []:
            slot = calls.setdefault(tc["index"], {"args": ""})
            if "id" in tc:
                assert "id" not in slot
                slot["id"], slot["name"] = tc["id"], tc["function"]["name"]
            else:
                fragments += 1
            slot["args"] += tc["function"].get("arguments", "")
    assert fragments >= 6
    assert calls[0]["id"] == "toolu_1" and calls[0]["name"] == "get_weather"
    assert orjson.loads(calls[0]["args"]) == args1
    assert calls[1]["id"] == "toolu_2" and orjson.loads(calls[1]["args"]) == {"tz": "UTC"}
    assert chunks[-2].data["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1].usage is not None


async def test_stream_early_close(provider: AnthropicProvider, mock: MockAnthropic) -> None:
    mock.script(text="a b c d e f", chunks=6, delay=0.01)
    agen = provider.stream(req(stream=True), DEP)
    first = await agen.__anext__()  # type: ignore[attr-defined]
    assert first.data["choices"][0]["delta"]["role"] == "assistant"
    await agen.aclose()  # type: ignore[attr-defined]
    # the provider still works afterwards
    resp = await provider.complete(req(), DEP)
    assert resp.body["choices"][0]["message"]["content"]


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "etype", "retryable", "gw_status"), [
    (400, "invalid_request_error", False, 400),
    (401, "authentication_error", False, 502),
    (403, "permission_error", False, 502),
    (404, "not_found_error", False, 502),
    (500, "api_error", True, 502),
    (529, "overloaded_error", True, 502),
])
async def test_status_errors(provider: AnthropicProvider, mock: MockAnthropic, status: int,
                             etype: str, retryable: bool, gw_status: int) -> None:
    for stream in (False, True):
        mock.script(status=status, error_type=etype, error_message=f"boom {etype}")
        with pytest.raises(UpstreamStatusError) as ei:
            if stream:
                await collect(provider, req())
            else:
                await provider.complete(req(), DEP)
        e = ei.value
        assert type(e) is UpstreamStatusError
        assert e.upstream_status == status
        assert e.retryable is retryable
        assert e.status == gw_status
        assert f"boom {etype}" in e.message
        assert "sk-ant-test" not in e.message
        assert e.deployment == DEP.name


async def test_rate_limit_retry_after(provider: AnthropicProvider, mock: MockAnthropic
                                      ) -> None:
    mock.script(status=429, error_type="rate_limit_error", error_message="slow down",
                headers={"retry-after": "7"})
    with pytest.raises(UpstreamStatusError) as ei:
        await provider.complete(req(), DEP)
    assert ei.value.status == 429 and ei.value.retryable
    assert ei.value.retry_after == 7.0


async def test_prompt_too_long(provider: AnthropicProvider, mock: MockAnthropic) -> None:
    mock.script(status=400, error_type="invalid_request_error",
                error_message="prompt is too long: 210000 tokens > 200000 maximum")
    with pytest.raises(ContextLengthExceeded) as ei:
        await provider.complete(req(), DEP)
    assert not ei.value.retryable


async def test_mid_stream_error_event(provider: AnthropicProvider, mock: MockAnthropic
                                      ) -> None:
    mock.script(text="partial answer here", stream_error=("overloaded_error", "Overloaded"),
                error_after=3)
    got: list[StreamChunk] = []
    with pytest.raises(UpstreamStatusError) as ei:
        async for c in provider.stream(req(), DEP):
            got.append(c)
    assert got  # some chunks came before the error
    assert ei.value.upstream_status == 529 and ei.value.retryable
    mock.script(stream_error=("mystery_error", "???"), error_after=1)
    with pytest.raises(UpstreamBadResponse):
        await collect(provider, req())


async def test_truncated_stream(provider: AnthropicProvider, mock: MockAnthropic) -> None:
    mock.script(truncate_after=4)
    with pytest.raises(UpstreamBadResponse):
        await collect(provider, req())


async def test_malformed_json(provider: AnthropicProvider, mock: MockAnthropic) -> None:
    mock.script(raw=b'{"id": "msg_1", "content": [')
    with pytest.raises(UpstreamBadResponse):
        await provider.complete(req(), DEP)
    mock.script(raw=b"event: message_start\ndata: {nope\n\n",
                raw_content_type="text/event-stream")
    with pytest.raises(UpstreamBadResponse):
        await collect(provider, req())
    mock.script(raw=b"<html>oops</html>", raw_content_type="text/html")
    with pytest.raises(UpstreamBadResponse):
        await collect(provider, req())


async def test_missing_key_is_upstream_auth_error(mock: MockAnthropic) -> None:
    p = AnthropicProvider(ProviderSpec(name="anthropic", wire="anthropic", base_url=mock.url))
    try:
        with pytest.raises(UpstreamStatusError) as ei:
            await p.complete(req(), DEP)
        assert ei.value.upstream_status == 401
    finally:
        await p.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused() -> None:
    p = AnthropicProvider(ProviderSpec(name="anthropic", wire="anthropic", api_key="k",
                                       base_url=f"http://127.0.0.1:{_free_port()}"))
    try:
        with pytest.raises(UpstreamConnectionError):
            await p.complete(req(), DEP)
        with pytest.raises(UpstreamConnectionError):
            await collect(p, req())
    finally:
        await p.aclose()


def test_default_base_url() -> None:
    p = AnthropicProvider(ProviderSpec(name="a", wire="anthropic"))
    assert p.url == "https://api.anthropic.com/v1/messages"
    p = AnthropicProvider(ProviderSpec(name="a", wire="anthropic",
                                       base_url="https://proxy.example/v1/"))
    assert p.url == "https://proxy.example/v1/messages"
