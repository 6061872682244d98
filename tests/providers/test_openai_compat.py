from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.mocks.openai_server import MockOpenAI
from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import (
    ConfigError,
    ContentPolicyError,
    ContextLengthExceeded,
    UpstreamBadResponse,
    UpstreamConnectionError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from tierline.providers.base import Provider
from tierline.providers.openai_compat import OpenAICompatProvider
from tierline.types import ChatRequest, StreamChunk

DEP = Deployment(name="mock/gpt-test", provider="mock", model="gpt-test-upstream")


@pytest.fixture
async def mock() -> AsyncIterator[MockOpenAI]:
    async with MockOpenAI(require_key=True) as m:
        yield m  # type: ignore[misc]


def make(mock: MockOpenAI, **kw: Any) -> OpenAICompatProvider:
    kw.setdefault("api_key", "sk-test-secret")
    return OpenAICompatProvider(ProviderSpec(name="mock", base_url=mock.url + "/v1", **kw))


@pytest.fixture
async def provider(mock: MockOpenAI) -> AsyncIterator[OpenAICompatProvider]:
    p = make(mock)
    yield p
    await p.aclose()


def req(**body: Any) -> ChatRequest:
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    body.setdefault("model", "tier-fast")
    return ChatRequest(body=body, model=body["model"], stream=bool(body.get("stream")))


async def collect(p: OpenAICompatProvider, r: ChatRequest) -> list[StreamChunk]:
    return [c async for c in p.stream(r, DEP)]


def test_needs_base_url() -> None:
    with pytest.raises(ConfigError):
        OpenAICompatProvider(ProviderSpec(name="x"))


async def test_is_a_provider(provider: OpenAICompatProvider) -> None:
    assert isinstance(provider, Provider)


async def test_body_passed_through_with_model_replaced(provider: OpenAICompatProvider,
                                                       mock: MockOpenAI) -> None:
    body = {"model": "tier-fast", "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.2, "top_p": 0.5, "n": 2, "logprobs": True, "seed": 7,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required", "response_format": {"type": "json_object"},
            "some_vendor_extension": {"x": [1, 2]}, "stream": False,
            "stream_options": {"include_usage": False}}
    r = req(**body)
    before = orjson.dumps(r.body)
    await provider.complete(r, DEP)
    assert orjson.dumps(r.body) == before  # not mutated
    got = mock.requests[-1]
    assert got.path == "/v1/chat/completions"
    assert got.header("authorization") == "Bearer sk-test-secret"
    expected = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    expected["model"] = "gpt-test-upstream"
    assert got.json == expected


async def test_stream_forces_include_usage(provider: OpenAICompatProvider,
                                           mock: MockOpenAI) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0.1,
            "stream": True, "stream_options": {"include_usage": False, "other": 1},
            "max_tokens": 9}
    await collect(provider, req(**body))
    got = mock.requests[-1]
    assert got.header("accept") == "text/event-stream"
    assert got.json == {"model": "gpt-test-upstream",
                        "messages": [{"role": "user", "content": "Hi"}],
                        "temperature": 0.1, "max_tokens": 9, "stream": True,
                        "stream_options": {"include_usage": True, "other": 1}}
    await collect(provider, req())  # no stream flag in the body at all
    assert mock.requests[-1].json["stream"] is True
    assert mock.requests[-1].json["stream_options"] == {"include_usage": True}


async def test_stream_without_stream_options(mock: MockOpenAI) -> None:
    """`send_stream_options: false` (vendors that reject the field, e.g. Mistral): the
    field is not added, and a client's own is dropped."""
    p = make(mock, send_stream_options=False)
    try:
        chunks = await collect(p, req(stream=True, max_tokens=9,
                                      stream_options={"include_usage": True}))
        assert mock.requests[-1].json == {"model": "gpt-test-upstream",
                                          "messages": [{"role": "user", "content": "Hi"}],
                                          "max_tokens": 9, "stream": True}
        assert "".join(c.data["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c.data.get("choices")) == "Hello from the mock."
        await collect(p, req())
        assert "stream_options" not in mock.requests[-1].json
    finally:
        await p.aclose()


async def test_complete_response_and_usage(provider: OpenAICompatProvider,
                                           mock: MockOpenAI) -> None:
    mock.script(text="Paris.", prompt_tokens=30, completion_tokens=8, cached_tokens=16,
                reasoning_tokens=3)
    resp = await provider.complete(req(), DEP)
    assert resp.body["choices"][0]["message"]["content"] == "Paris."
    assert resp.body["model"] == "gpt-test-upstream"
    u = resp.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens) == \
        (30, 8, 16, 3)
    assert not u.estimated


async def test_complete_without_usage_is_estimated(provider: OpenAICompatProvider,
                                                   mock: MockOpenAI) -> None:
    mock.script(usage=False)
    resp = await provider.complete(req(), DEP)
    assert resp.usage.estimated


async def test_tool_calls_pass_through(provider: OpenAICompatProvider, mock: MockOpenAI
                                       ) -> None:
    mock.script(text=None, tool_calls=[("call_1", "get_weather", {"city": "Paris"})])
    resp = await provider.complete(req(), DEP)
    ch = resp.body["choices"][0]
    assert ch["finish_reason"] == "tool_calls"
    assert ch["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_stream_chunks_and_usage(provider: OpenAICompatProvider, mock: MockOpenAI
                                       ) -> None:
    mock.script(text="one two three four five", chunks=5, prompt_tokens=12,
                completion_tokens=5, cached_tokens=4)
    chunks = await collect(provider, req(stream=True))
    assert all(c.raw is not None and orjson.loads(c.raw) == c.data for c in chunks)
    assert chunks[0].data["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c.data["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c.data["choices"])
    assert text == "one two three four five"
    assert chunks[-2].data["choices"][0]["finish_reason"] == "stop"
    last = chunks[-1]
    assert last.data["choices"] == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens,
            last.usage.cached_tokens) == (12, 5, 4)
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_tool_call_fragments(provider: OpenAICompatProvider,
                                          mock: MockOpenAI) -> None:
    args = {"city": "Paris", "days": 3}
    mock.script(text=None, tool_calls=[("call_9", "get_weather", args)], chunks=4)
    chunks = await collect(provider, req())
    buf = ""
    for c in chunks:
        for tc in (c.data["choices"][0]["delta"].get("tool_calls") or []
                   if c.data["choices"] else []):
            buf += tc["function"].get("arguments", "")
    assert orjson.loads(buf) == args


@pytest.mark.parametrize(("status", "retryable", "gw_status"), [
    (400, False, 400), (401, False, 502), (404, False, 502), (500, True, 502),
    (503, True, 502),
])
async def test_status_errors(provider: OpenAICompatProvider, mock: MockOpenAI, status: int,
                             retryable: bool, gw_status: int) -> None:
    for stream in (False, True):
        mock.script(status=status, error_message=f"failure {status}")
        with pytest.raises(UpstreamStatusError) as ei:
            if stream:
                await collect(provider, req())
            else:
                await provider.complete(req(), DEP)
        e = ei.value
        assert type(e) is UpstreamStatusError
        assert e.upstream_status == status and e.retryable is retryable
        assert e.status == gw_status
        assert f"failure {status}" in e.message and "sk-test-secret" not in e.message


async def test_missing_key_rejected_by_mock(mock: MockOpenAI) -> None:
    p = OpenAICompatProvider(ProviderSpec(name="mock", base_url=mock.url + "/v1"))
    try:
        with pytest.raises(UpstreamStatusError) as ei:
            await p.complete(req(), DEP)
        assert ei.value.upstream_status == 401 and ei.value.code == "upstream_auth_error"
    finally:
        await p.aclose()


async def test_rate_limit_retry_after(provider: OpenAICompatProvider, mock: MockOpenAI
                                      ) -> None:
    mock.script(status=429, error_message="Rate limit reached", headers={"retry-after": "3"})
    with pytest.raises(UpstreamStatusError) as ei:
        await provider.complete(req(), DEP)
    assert ei.value.status == 429 and ei.value.retryable and ei.value.retry_after == 3.0
    mock.script(status=429, headers={"retry-after-ms": "250", "retry-after": "9"})
    with pytest.raises(UpstreamStatusError) as ei:
        await collect(provider, req())
    assert ei.value.retry_after == 0.25


async def test_context_length_and_policy(provider: OpenAICompatProvider, mock: MockOpenAI
                                         ) -> None:
    mock.script(status=400, error_code="context_length_exceeded", error_param="messages",
                error_message="This model's maximum context length is 8192 tokens. However, "
                              "your messages resulted in 9000 tokens.")
    with pytest.raises(ContextLengthExceeded):
        await provider.complete(req(), DEP)
    mock.script(status=400, error_message="Your request was rejected by our safety system.")
    with pytest.raises(ContentPolicyError):
        await provider.complete(req(), DEP)


@pytest.mark.parametrize("style", ["finish_reason", "error_object"])
async def test_error_inside_200_stream(provider: OpenAICompatProvider, mock: MockOpenAI,
                                       style: str) -> None:
    mock.script(text="a b c d e f", chunks=6, stream_error=style, error_after=2)
    got: list[StreamChunk] = []
    with pytest.raises(UpstreamBadResponse, match="mid-stream"):
        async for c in provider.stream(req(), DEP):
            got.append(c)
    assert len(got) == 3  # role chunk + 2 content chunks


async def test_truncated_stream(provider: OpenAICompatProvider, mock: MockOpenAI) -> None:
    mock.script(truncate=True)
    with pytest.raises(UpstreamBadResponse, match=r"\[DONE\]"):
        await collect(provider, req())


async def test_malformed_json(provider: OpenAICompatProvider, mock: MockOpenAI) -> None:
    mock.script(raw=b'{"id": "chatcmpl-1", "choices": [')
    with pytest.raises(UpstreamBadResponse):
        await provider.complete(req(), DEP)
    mock.script(raw=b'{"id": "chatcmpl-1", "object": "chat.completion"}')
    with pytest.raises(UpstreamBadResponse, match="choices"):
        await provider.complete(req(), DEP)
    mock.script(malformed_chunk=True, error_after=1)
    with pytest.raises(UpstreamBadResponse, match="malformed"):
        await collect(provider, req())
    mock.script(raw=b"<html>502 Bad Gateway</html>", raw_content_type="text/html")
    with pytest.raises(UpstreamBadResponse, match="event stream"):
        await collect(provider, req())


async def test_error_body_in_200(provider: OpenAICompatProvider, mock: MockOpenAI) -> None:
    mock.script(raw=b'{"error": {"message": "backend exploded"}}')
    with pytest.raises(UpstreamBadResponse):
        await provider.complete(req(), DEP)
    mock.script(raw=b'{"error": {"message": "backend exploded"}}')
    with pytest.raises(UpstreamStatusError, match="backend exploded"):
        await collect(provider, req())


async def test_first_token_timeout(mock: MockOpenAI) -> None:
    p = make(mock, first_token_timeout=0.1)
    try:
        mock.script(latency=0.5)
        with pytest.raises(UpstreamTimeout):
            await collect(p, req())
    finally:
        await p.aclose()


async def test_idle_timeout(mock: MockOpenAI) -> None:
    p = make(mock, idle_timeout=0.05)
    try:
        mock.script(text="a b c", chunks=3, delay=0.3)
        with pytest.raises(UpstreamTimeout, match="stalled"):
            await collect(p, req())
    finally:
        await p.aclose()


async def test_total_timeout_non_stream(mock: MockOpenAI) -> None:
    p = make(mock, total_timeout=0.1)
    try:
        mock.script(latency=0.5)
        with pytest.raises(UpstreamTimeout):
            await p.complete(req(), DEP)
    finally:
        await p.aclose()


async def test_latency_within_limits(provider: OpenAICompatProvider, mock: MockOpenAI
                                     ) -> None:
    mock.script(latency=0.05, delay=0.01, chunks=4)
    chunks = await collect(provider, req())
    assert chunks[-1].usage is not None


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = OpenAICompatProvider(ProviderSpec(name="x", base_url=f"http://127.0.0.1:{port}/v1"))
    try:
        with pytest.raises(UpstreamConnectionError):
            await p.complete(req(), DEP)
        with pytest.raises(UpstreamConnectionError):
            await collect(p, req())
    finally:
        await p.aclose()
