from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.mocks.replicate_server import MockReplicate
from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamBadResponse,
    UpstreamConnectionError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from tierline.providers.base import Provider
from tierline.providers.replicate import ReplicateProvider
from tierline.types import ChatRequest, StreamChunk

DEP = Deployment(name="replicate/llama-3-70b", provider="replicate",
                 model="meta/meta-llama-3-70b-instruct", max_output_tokens=512)


@pytest.fixture
async def mock() -> AsyncIterator[MockReplicate]:
    async with MockReplicate() as m:
        yield m  # type: ignore[misc]


def make(mock: MockReplicate, **kw: Any) -> ReplicateProvider:
    spec = ProviderSpec(name="replicate", wire="replicate", base_url=mock.url + "/v1",
                        api_key="r8_secret", **kw)
    p = ReplicateProvider(spec)
    p.poll_interval = 0.01
    return p


@pytest.fixture
async def provider(mock: MockReplicate) -> AsyncIterator[ReplicateProvider]:
    p = make(mock)
    yield p
    await p.aclose()


def req(**body: Any) -> ChatRequest:
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    body.setdefault("model", "anything")
    return ChatRequest(body=body, model=body["model"])


async def collect(p: ReplicateProvider, r: ChatRequest, dep: Deployment = DEP
                  ) -> list[StreamChunk]:
    return [c async for c in p.stream(r, dep)]


def creates(m: MockReplicate) -> list[Any]:
    return [r for r in m.requests if r.method == "POST" and r.path.endswith("/predictions")]


# -- requests -------------------------------------------------------------------------------

async def test_is_a_provider(provider: ReplicateProvider) -> None:
    assert isinstance(provider, Provider)


async def test_sync_request_shape(provider: ReplicateProvider, mock: MockReplicate) -> None:
    resp = await provider.complete(req(
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
        temperature=0.3, top_p=0.8, stop=["</s>", "END"], max_tokens=64, seed=1), DEP)
    r = creates(mock)[-1]
    assert r.path == "/v1/models/meta/meta-llama-3-70b-instruct/predictions"
    assert r.header("authorization") == "Bearer r8_secret"
    assert r.header("prefer") == "wait"
    assert r.json == {"input": {
        "prompt": "Hi there", "system_prompt": "Be brief.", "max_tokens": 64,
        "max_new_tokens": 64, "temperature": 0.3, "top_p": 0.8, "seed": 1,
        "stop_sequences": "</s>,END"}}
    assert resp.body["choices"][0]["message"]["content"] == "Hello from the mock."
    assert len(mock.requests) == 1  # Prefer: wait answered it; no polling


async def test_multi_turn_transcript_and_default_max(provider: ReplicateProvider,
                                                     mock: MockReplicate) -> None:
    await provider.complete(req(messages=[
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"}], stop="STOP"), DEP)
    inp = creates(mock)[-1].json["input"]
    assert inp["prompt"] == "User: Hi\n\nAssistant: Hello!\n\nUser: How are you?\n\nAssistant:"
    assert "system_prompt" not in inp
    assert inp["max_tokens"] == 512  # the deployment's max_output_tokens
    assert inp["stop_sequences"] == "STOP"


async def test_version_model_id(provider: ReplicateProvider, mock: MockReplicate) -> None:
    version = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
    dep = DEP.model_copy(update={"model": f"acme/llm:{version}"})
    await provider.complete(req(), dep)
    r = creates(mock)[-1]
    assert r.path == "/v1/predictions"
    assert r.json["version"] == version


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 3}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "system", "content": "only system"}]}, "messages"),
    # Replicate splits stop_sequences on commas: "Hello, world" would become two stops
    ({"stop": ["Hello, world", "END"]}, "stop"),
    ({"stop": "a,b"}, "stop"),
])
async def test_untranslatable_rejected(provider: ReplicateProvider, mock: MockReplicate,
                                       body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        await provider.complete(req(**body), DEP)
    assert ei.value.param == param
    assert mock.requests == []


# -- sync + polling -------------------------------------------------------------------------

async def test_sync_usage_from_metrics(provider: ReplicateProvider, mock: MockReplicate
                                       ) -> None:
    mock.script(output=["The", " answer", " is", " 42."],
                metrics={"input_token_count": 20, "output_token_count": 5})
    resp = await provider.complete(req(), DEP)
    assert resp.body["object"] == "chat.completion"
    assert resp.body["id"].endswith("mockpred")
    ch = resp.body["choices"][0]
    assert ch["message"]["content"] == "The answer is 42."
    assert ch["finish_reason"] == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (20, 5)
    assert not resp.usage.estimated
    assert resp.body["usage"]["total_tokens"] == 25


async def test_length_finish_when_limit_hit(provider: ReplicateProvider, mock: MockReplicate
                                            ) -> None:
    mock.script(metrics={"input_token_count": 3, "output_token_count": 16})
    resp = await provider.complete(req(max_tokens=16), DEP)
    assert resp.body["choices"][0]["finish_reason"] == "length"


async def test_usage_estimated_without_metrics(provider: ReplicateProvider,
                                               mock: MockReplicate) -> None:
    mock.script(output=["abcdefgh"], metrics=None)
    resp = await provider.complete(req(messages=[{"role": "user", "content": "x" * 40}]), DEP)
    assert resp.usage.estimated
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (10, 2)


async def test_polling_until_done(provider: ReplicateProvider, mock: MockReplicate) -> None:
    mock.script(polls=3)
    resp = await provider.complete(req(), DEP)
    assert resp.body["choices"][0]["message"]["content"] == "Hello from the mock."
    gets = [r for r in mock.requests if r.method == "GET"]
    assert len(gets) == 4
    assert all(r.header("authorization") == "Bearer r8_secret" for r in gets)


async def test_polling_timeout_cancels(mock: MockReplicate) -> None:
    p = make(mock, total_timeout=0.2)
    try:
        mock.script(polls=10_000)
        with pytest.raises(UpstreamTimeout):
            await p.complete(req(), DEP)
        assert len(mock.canceled) == 1
    finally:
        await p.aclose()


async def test_failed_prediction(provider: ReplicateProvider, mock: MockReplicate) -> None:
    mock.script(status="failed", error="CUDA error: out of memory")
    with pytest.raises(UpstreamBadResponse) as ei:
        await provider.complete(req(), DEP)
    assert "out of memory" in ei.value.message and ei.value.retryable
    mock.script(status="failed", polls=2,
                error="Prompt length exceeds the maximum context length of 8192 tokens")
    with pytest.raises(ContextLengthExceeded):
        await provider.complete(req(), DEP)


async def test_canceled_prediction(provider: ReplicateProvider, mock: MockReplicate) -> None:
    mock.script(status="canceled")
    with pytest.raises(UpstreamBadResponse, match="canceled"):
        await provider.complete(req(), DEP)


# -- HTTP errors ----------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "retryable", "gw_status"), [
    (401, False, 502), (402, False, 400), (404, False, 502), (422, False, 400),
    (500, True, 502),
])
async def test_status_errors(provider: ReplicateProvider, mock: MockReplicate, status: int,
                             retryable: bool, gw_status: int) -> None:
    for stream in (False, True):
        mock.script(http_status=status, detail=f"detail {status}")
        with pytest.raises(UpstreamStatusError) as ei:
            if stream:
                await collect(provider, req())
            else:
                await provider.complete(req(), DEP)
        e = ei.value
        assert e.upstream_status == status and e.retryable is retryable
        assert e.status == gw_status
        assert f"detail {status}" in e.message and "r8_secret" not in e.message


async def test_rate_limited_retry_after(provider: ReplicateProvider, mock: MockReplicate
                                        ) -> None:
    mock.script(http_status=429, detail="Request was throttled. Expected available in 2s.",
                headers={"retry-after": "2"})
    with pytest.raises(UpstreamStatusError) as ei:
        await provider.complete(req(), DEP)
    assert ei.value.status == 429 and ei.value.retryable and ei.value.retry_after == 2.0


async def test_no_key_is_auth_error(mock: MockReplicate) -> None:
    p = ReplicateProvider(ProviderSpec(name="replicate", wire="replicate",
                                       base_url=mock.url + "/v1"))
    try:
        with pytest.raises(UpstreamStatusError) as ei:
            await p.complete(req(), DEP)
        assert ei.value.upstream_status == 401
    finally:
        await p.aclose()


async def test_malformed_json(provider: ReplicateProvider, mock: MockReplicate) -> None:
    mock.script(raw=b'{"id": "x", "status": ')
    with pytest.raises(UpstreamBadResponse):
        await provider.complete(req(), DEP)
    mock.script(raw=b'{"id": "x"}')
    with pytest.raises(UpstreamBadResponse):
        await provider.complete(req(), DEP)


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = ReplicateProvider(ProviderSpec(name="r", wire="replicate", api_key="k",
                                       base_url=f"http://127.0.0.1:{port}/v1"))
    try:
        with pytest.raises(UpstreamConnectionError):
            await p.complete(req(), DEP)
        with pytest.raises(UpstreamConnectionError):
            await collect(p, req())
    finally:
        await p.aclose()


# -- streaming ------------------------------------------------------------------------------

async def test_stream_text_and_usage(provider: ReplicateProvider, mock: MockReplicate
                                     ) -> None:
    mock.script(output=["Hello", ",\nworld", "!"],
                metrics={"input_token_count": 7, "output_token_count": 3})
    chunks = await collect(provider, req())
    create = creates(mock)[-1]
    assert create.json["stream"] is True and create.header("prefer") is None
    stream_get = [r for r in mock.requests if r.path.startswith("/v1/stream/")]
    assert stream_get and stream_get[0].header("accept") == "text/event-stream"
    assert all(c.data["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0].data["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c.data["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert pieces == ["Hello", ",\nworld", "!"]  # multi-line data joined back
    assert chunks[-2].data["choices"][0]["finish_reason"] == "stop"
    last = chunks[-1]
    assert last.data["choices"] == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 3)
    assert not last.usage.estimated
    assert last.data["usage"]["total_tokens"] == 10


async def test_stream_usage_estimated(provider: ReplicateProvider, mock: MockReplicate
                                      ) -> None:
    mock.script(output=["12345678"], metrics=None)
    chunks = await collect(provider, req(messages=[{"role": "user", "content": "y" * 8}]))
    u = chunks[-1].usage
    assert u is not None and u.estimated and (u.prompt_tokens, u.completion_tokens) == (2, 2)


async def test_stream_error_event(provider: ReplicateProvider, mock: MockReplicate) -> None:
    mock.script(output=["a", "b", "c"], stream_error="model crashed", error_after=2)
    got: list[StreamChunk] = []
    with pytest.raises(UpstreamBadResponse, match="model crashed"):
        async for c in provider.stream(req(), DEP):
            got.append(c)
    assert [c.data["choices"][0]["delta"].get("content") for c in got[1:]] == ["a", "b"]


async def test_stream_done_canceled(provider: ReplicateProvider, mock: MockReplicate) -> None:
    mock.script(done_reason="canceled")
    with pytest.raises(UpstreamBadResponse, match="canceled"):
        await collect(provider, req())


async def test_stream_truncated(provider: ReplicateProvider, mock: MockReplicate) -> None:
    mock.script(truncate=True)
    with pytest.raises(UpstreamBadResponse):
        await collect(provider, req())


async def test_stream_unsupported_model(provider: ReplicateProvider, mock: MockReplicate
                                        ) -> None:
    mock.script(streamable=False)
    with pytest.raises(UpstreamBadResponse, match="streaming"):
        await collect(provider, req())
    assert len(mock.canceled) == 1


async def test_stream_early_close_cancels(provider: ReplicateProvider, mock: MockReplicate
                                          ) -> None:
    mock.script(output=[f"t{i} " for i in range(50)], delay=0.01)
    agen = provider.stream(req(), DEP)
    await agen.__anext__()  # type: ignore[attr-defined]
    await agen.__anext__()  # type: ignore[attr-defined]
    await agen.aclose()  # type: ignore[attr-defined]
    assert len(mock.canceled) == 1


def test_default_base_url() -> None:
    p = ReplicateProvider(ProviderSpec(name="r", wire="replicate"))
    assert p.base == "https://api.replicate.com/v1"
