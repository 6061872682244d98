"""Replicate: the URLs a prediction names are followed only where the API token may go
(base_url's origin, plus `follow_hosts` for the stream); anything else is refused."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.mocks.net import Catchall, MockProxy, proxy_env
from tests.mocks.replicate_server import MockReplicate
from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import ConfigError, UpstreamTimeout
from tierline.providers.origins import parse_follow_hosts, url_origin
from tierline.providers.replicate import ReplicateProvider
from tierline.types import ChatRequest, StreamChunk

DEP = Deployment(name="replicate/llama", provider="replicate",
                 model="meta/meta-llama-3-70b-instruct", max_output_tokens=512)
TOKEN = "r8_secret"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_env(monkeypatch, None)


@pytest.fixture
async def mock() -> AsyncIterator[MockReplicate]:
    async with MockReplicate() as m:
        yield m  # type: ignore[misc]


@pytest.fixture
async def evil() -> AsyncIterator[Catchall]:
    async with Catchall() as m:
        yield m  # type: ignore[misc]


def make(mock: MockReplicate, follow_hosts: list[str] | None = None, **kw: Any
         ) -> ReplicateProvider:
    spec = ProviderSpec(name="replicate", wire="replicate", base_url=mock.url + "/v1",
                        api_key=TOKEN, **kw)
    p = ReplicateProvider(spec, follow_hosts=follow_hosts)
    p.poll_interval = 0.01
    return p


def req() -> ChatRequest:
    return ChatRequest(body={"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
                       model="m")


def texts(chunks: list[StreamChunk]) -> str:
    return "".join(c.data["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c.data["choices"])


def paths(m: MockReplicate) -> list[str]:
    return [f"{r.method} {r.path}" for r in m.requests]


@pytest.mark.parametrize("transport", ["auto", "aiohttp"])
async def test_complete_polls_base_url_not_a_foreign_get_url(
        mock: MockReplicate, evil: Catchall, transport: str) -> None:
    mock.script(polls=2, url_base=evil.url)
    p = make(mock, transport=transport)
    try:
        resp = await p.complete(req(), DEP)
    finally:
        await p.aclose()
    assert resp.body["choices"][0]["message"]["content"] == "Hello from the mock."
    pid = resp.body["id"]
    assert paths(mock)[1:] == [f"GET /v1/predictions/{pid}"] * 3
    assert all(r.header("authorization") == f"Bearer {TOKEN}" for r in mock.requests)
    assert evil.requests == []


async def test_timeout_cancels_at_base_url(mock: MockReplicate, evil: Catchall) -> None:
    mock.script(polls=10_000, url_base=evil.url)
    p = make(mock, total_timeout=0.2)
    try:
        with pytest.raises(UpstreamTimeout):
            await p.complete(req(), DEP)
    finally:
        await p.aclose()
    assert len(mock.canceled) == 1
    assert paths(mock)[-1].endswith("/cancel")
    assert evil.requests == []


@pytest.mark.parametrize("transport", ["auto", "aiohttp"])
async def test_foreign_stream_url_is_not_opened_and_output_is_polled(
        mock: MockReplicate, evil: Catchall, transport: str,
        caplog: pytest.LogCaptureFixture) -> None:
    mock.script(polls=3, url_base=evil.url, output=["Hel", "lo", " there", "!"])
    p = make(mock, transport=transport)
    try:
        with caplog.at_level(logging.WARNING, "tierline.providers.replicate"):
            got = [c async for c in p.stream(req(), DEP)]
    finally:
        await p.aclose()
    assert evil.requests == []
    assert texts(got) == "Hello there!"
    assert got[0].data["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # the output went out as it grew, one delta per poll
    deltas = [c.data["choices"][0]["delta"].get("content") for c in got[1:-2]]
    assert deltas == ["Hel", "lo", " there", "!"]
    assert got[-2].data["choices"][0]["finish_reason"] == "stop"
    usage = got[-1].usage
    assert usage is not None and not usage.estimated and usage.completion_tokens == 4
    assert not any("/stream/" in x for x in paths(mock))
    assert f"127.0.0.1:{evil.port}" in caplog.text and "polling" in caplog.text
    assert TOKEN not in caplog.text


async def test_foreign_urls_early_close_cancels_at_base_url(mock: MockReplicate,
                                                           evil: Catchall) -> None:
    mock.script(polls=10_000, url_base=evil.url, output=[f"t{i} " for i in range(50)])
    p = make(mock)
    try:
        agen = p.stream(req(), DEP)
        await agen.__anext__()  # type: ignore[attr-defined]
        await agen.__anext__()  # type: ignore[attr-defined]
        await agen.aclose()  # type: ignore[attr-defined]
    finally:
        await p.aclose()
    assert len(mock.canceled) == 1
    assert evil.requests == []


async def test_failed_prediction_while_polling(mock: MockReplicate, evil: Catchall) -> None:
    mock.script(polls=1, url_base=evil.url, status="failed", error="CUDA out of memory")
    p = make(mock)
    try:
        with pytest.raises(Exception, match="CUDA out of memory"):
            [c async for c in p.stream(req(), DEP)]
    finally:
        await p.aclose()
    assert evil.requests == []


async def test_other_origin_of_the_same_server_needs_follow_hosts(mock: MockReplicate
                                                                  ) -> None:
    """`localhost` is another origin than base_url's `127.0.0.1`, though the same server."""
    other = f"http://localhost:{mock.port}"
    mock.script(url_base=other)
    p = make(mock)
    try:
        got = [c async for c in p.stream(req(), DEP)]
    finally:
        await p.aclose()
    assert texts(got) == "Hello from the mock."
    assert not any("/stream/" in x for x in paths(mock))  # polled
    assert all(r.header("host") == f"127.0.0.1:{mock.port}" for r in mock.requests)

    mock.reset()
    mock.script(url_base=other)
    p = make(mock, follow_hosts=[other])
    try:
        got = [c async for c in p.stream(req(), DEP)]
    finally:
        await p.aclose()
    assert texts(got) == "Hello from the mock."
    streamed = [r for r in mock.requests if "/stream/" in r.path]
    assert len(streamed) == 1 and streamed[0].header("host") == f"localhost:{mock.port}"
    assert streamed[0].header("authorization") == f"Bearer {TOKEN}"
    # get / cancel still only at base_url's origin
    assert all(r.header("host") == f"127.0.0.1:{mock.port}" for r in mock.requests
               if "/stream/" not in r.path)


async def test_stream_through_the_env_proxy(mock: MockReplicate,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async with MockProxy() as proxy:
        proxy_env(monkeypatch, proxy.url)
        p = make(mock)
        assert not p.http.fast
        try:
            got = [c async for c in p.stream(req(), DEP)]
        finally:
            await p.aclose()
    assert texts(got) == "Hello from the mock."
    pid = got[0].data["id"]
    assert f"GET {mock.url}/v1/stream/{pid} HTTP/1.1" in proxy.lines
    assert proxy.lines[0] == f"POST {mock.url}/v1/models/{DEP.model}/predictions HTTP/1.1"


@pytest.mark.parametrize(("url", "ok"), [
    ("https://stream.replicate.com/v1/files/abc", True),
    ("https://streaming.api.replicate.com/v1/predictions/abc", True),
    ("https://api.replicate.com/v1/predictions/abc", True),
    ("https://STREAM.Replicate.com./v1/x", True),
    ("http://stream.replicate.com/v1/files/abc", False),  # not https
    ("https://stream.replicate.com:8443/v1/files/abc", False),
    ("https://replicate.com/v1/files/abc", False),  # only subdomains of *.replicate.com
    ("https://evilreplicate.com/x", False),
    ("https://stream.replicate.com.evil.example/x", False),
    ("https://api.replicate.com@evil.example/x", False),
    ("https://evil.example\\@stream.replicate.com/x", False),
    ("https://evil.example /x", False),
    ("//stream.replicate.com/x", False),
    ("/v1/stream/x", False),
    ("file:///etc/passwd", False),
    ("https://[::1/x", False),
    (None, False),
    (["https://stream.replicate.com/x"], False),
])
def test_default_follow_hosts(url: Any, ok: bool) -> None:
    p = ReplicateProvider(ProviderSpec(name="r", wire="replicate"))
    assert p.may_stream_from(url) is ok


def test_base_url_origin_is_always_followed() -> None:
    p = ReplicateProvider(ProviderSpec(name="r", wire="replicate",
                                       base_url="http://10.0.0.5:8080/v1"), follow_hosts=[])
    assert p.may_stream_from("http://10.0.0.5:8080/v1/stream/x")
    assert not p.may_stream_from("http://10.0.0.5:8081/v1/stream/x")
    assert not p.may_stream_from("https://10.0.0.5:8080/v1/stream/x")
    assert not p.may_stream_from("https://stream.replicate.com/v1/files/x")  # emptied


def test_follow_hosts_entries() -> None:
    assert parse_follow_hosts(["*.replicate.com", "stream.example", "http://h:81",
                               "https://*.x.example:8443/"]) == [
        ("https", "*.replicate.com", 443), ("https", "stream.example", 443),
        ("http", "h", 81), ("https", "*.x.example", 8443)]
    assert parse_follow_hosts("x.example") == [("https", "x.example", 443)]
    for bad in ("ftp://x", "*", "a/b", "https://x/path", "user@host", "*.*.x", "a*.x", ""):
        with pytest.raises(ConfigError):
            parse_follow_hosts([bad])


def test_ids_are_quoted_under_base_url() -> None:
    p = ReplicateProvider(ProviderSpec(name="r", wire="replicate"))
    pred = {"id": "../../account?x=1", "urls": {"get": "https://evil.example/p"}}
    assert p._api_url(pred, "get", "d") == \
        "https://api.replicate.com/v1/predictions/..%2F..%2Faccount%3Fx%3D1"
    assert p._api_url({"id": "abc", "urls": {"cancel": "https://api.replicate.com/v1/c"}},
                      "cancel", "d") == "https://api.replicate.com/v1/c"
    assert p._api_url({"urls": {"cancel": "https://evil.example/c"}}, "cancel", "d") is None
    assert url_origin("https://API.replicate.com/v1") == ("https", "api.replicate.com", 443)


def test_follow_hosts_is_a_provider_setting() -> None:
    from tierline.catalog.load import build_catalog
    from tierline.config import parse_config
    from tierline.errors import ConfigError
    from tierline.providers.replicate import ReplicateProvider

    def provider(hosts: list[str] | str) -> ReplicateProvider:
        raw = {"catalog": {"builtin": False}, "server": {"request_log": "off"},
               "providers": {"rep": {"wire": "replicate", "api_key": "r8_x",
                                     "base_url": "https://api.replicate.com/v1",
                                     "follow_hosts": hosts}},
               "deployments": [{"name": "rep/m", "provider": "rep", "model": "a/b"}]}
        return ReplicateProvider(build_catalog(parse_config(raw, "fh")).providers["rep"])

    p = provider(["*.replicate.net"])
    assert provider("*.replicate.net").follow_hosts == p.follow_hosts  # one host, no list
    assert p.may_stream_from("https://stream.replicate.net/v1/files/x")
    assert not p.may_stream_from("https://stream.replicate.com/v1/files/x")
    with pytest.raises(ConfigError):
        provider(["ftp://x"])
