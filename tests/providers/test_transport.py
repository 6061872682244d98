"""The HTTP transport: redirects are never followed (by either client), and the environment's
proxy settings (HTTP_PROXY / HTTPS_PROXY / NO_PROXY) are used by the aiohttp client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.mocks.anthropic_server import MockAnthropic
from tests.mocks.net import Catchall, MockProxy, proxy_env
from tests.mocks.openai_server import MockOpenAI
from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import UpstreamStatusError
from tierline.providers.anthropic import AnthropicProvider
from tierline.providers.http import HttpClient
from tierline.providers.openai_compat import OpenAICompatProvider
from tierline.types import ChatRequest

DEP = Deployment(name="up/model", provider="up", model="model-1", max_output_tokens=64)


def req() -> ChatRequest:
    return ChatRequest(body={"model": "m", "messages": [{"role": "user", "content": "secret"}]},
                       model="m")


@pytest.fixture
async def evil() -> AsyncIterator[Catchall]:
    async with Catchall() as m:
        yield m  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_env(monkeypatch, None)


def make(wire: str, base_url: str, transport: str) -> OpenAICompatProvider | AnthropicProvider:
    spec = ProviderSpec(name="up", wire=wire, base_url=base_url,  # type: ignore[arg-type]
                        api_key="sk-topsecret-123456", transport=transport,  # type: ignore[arg-type]
                        headers={"x-vendor-token": "vendor-secret"})
    if wire == "anthropic":
        return AnthropicProvider(spec)
    return OpenAICompatProvider(spec)


async def call(p: OpenAICompatProvider | AnthropicProvider, stream: bool) -> None:
    if stream:
        async for _ in p.stream(req(), DEP):
            pass
    else:
        await p.complete(req(), DEP)


@pytest.mark.parametrize("transport", ["auto", "aiohttp"])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [307, 302])
async def test_redirect_is_not_followed(evil: Catchall, transport: str, wire: str,
                                        stream: bool, status: int) -> None:
    async with Catchall(redirect_to=evil.url + "/v1/collect", status=status) as up:
        p = make(wire, up.url + "/v1", transport)
        assert p.http.fast is (transport == "auto")
        try:
            with pytest.raises(UpstreamStatusError, match="redirect") as ei:
                await call(p, stream)
        finally:
            await p.aclose()
        assert len(up.requests) == 1
    err = ei.value
    assert err.upstream_status == status
    assert err.status == 502 and not err.retryable
    assert "to http://127.0.0.1" in err.message and "base_url" in err.message
    assert evil.requests == []


async def test_redirect_behind_a_proxy_is_not_followed(
        evil: Catchall, monkeypatch: pytest.MonkeyPatch) -> None:
    async with MockProxy() as proxy, Catchall(redirect_to=evil.url + "/x") as up:
        proxy_env(monkeypatch, proxy.url)
        p = make("anthropic", up.url, "auto")
        assert not p.http.fast  # a proxy in the environment selects aiohttp
        try:
            with pytest.raises(UpstreamStatusError, match="redirect"):
                await p.complete(req(), DEP)
        finally:
            await p.aclose()
        assert len(proxy.lines) == 1 and len(up.requests) == 1
    assert evil.requests == []


@pytest.fixture
async def openai() -> AsyncIterator[MockOpenAI]:
    async with MockOpenAI() as m:
        yield m  # type: ignore[misc]


@pytest.mark.parametrize("stream", [False, True])
async def test_requests_go_through_the_env_proxy(
        openai: MockOpenAI, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    async with MockProxy() as proxy:
        proxy_env(monkeypatch, proxy.url)
        p = make("openai", openai.url + "/v1", "auto")
        assert not p.http.fast
        try:
            await call(p, stream)
        finally:
            await p.aclose()
    assert proxy.lines == [f"POST {openai.url}/v1/chat/completions HTTP/1.1"]
    assert proxy.headers[0]["authorization"] == "Bearer sk-topsecret-123456"
    assert len(openai.requests) == 1
    assert openai.requests[0].header("authorization") == "Bearer sk-topsecret-123456"


async def test_anthropic_through_the_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async with MockAnthropic() as up, MockProxy() as proxy:
        proxy_env(monkeypatch, proxy.url)
        p = make("anthropic", up.url, "aiohttp")
        try:
            await p.complete(req(), DEP)
        finally:
            await p.aclose()
    assert proxy.lines == [f"POST {up.url}/v1/messages HTTP/1.1"]
    assert up.requests[0].header("x-api-key") == "sk-topsecret-123456"


async def test_no_proxy_exempts_a_host(openai: MockOpenAI,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async with MockProxy() as proxy:
        proxy_env(monkeypatch, proxy.url, no_proxy="127.0.0.1")
        p = make("openai", openai.url + "/v1", "auto")
        try:
            await p.complete(req(), DEP)
        finally:
            await p.aclose()
    assert proxy.lines == []
    assert len(openai.requests) == 1


async def test_upstream_netrc_entry_does_not_replace_the_key(
        openai: MockOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """aiohttp's trust_env would also read ~/.netrc for the upstream host and overwrite the
    provider's Authorization header with Basic credentials: not used."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    p = make("openai", openai.url + "/v1", "aiohttp")
    try:
        await p.complete(req(), DEP)
    finally:
        await p.aclose()
    assert openai.requests[0].header("authorization") == "Bearer sk-topsecret-123456"


def test_proxy_lookup_per_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_env(monkeypatch, "http://proxy.example:3128", no_proxy="internal.example")
    h = HttpClient(ProviderSpec(name="x", base_url="https://api.example/v1"))
    assert not h.fast
    proxy, auth = h.proxy_for("https://api.example/v1/chat/completions")
    assert str(proxy) == "http://proxy.example:3128" and auth is None
    assert h.proxy_for("https://internal.example/v1") == (None, None)
    opts: dict[str, Any] = h.aio_options("http://api.example/x")
    assert opts["allow_redirects"] is False and str(opts["proxy"]) == "http://proxy.example:3128"


def test_no_proxy_variables_keep_the_fast_client(monkeypatch: pytest.MonkeyPatch) -> None:
    h = HttpClient(ProviderSpec(name="x", base_url="https://api.example/v1"))
    assert h.fast
    assert h.proxy_for("https://api.example/v1") == (None, None)


@pytest.mark.parametrize("location", ["http://[::1", "http://[zz]/", ""])
def test_a_malformed_redirect_location_is_an_upstream_error(location: str) -> None:
    from tierline.errors import UpstreamStatusError
    from tierline.providers.http import redirect_error

    err = redirect_error(302, {"location": location}, "d")
    assert isinstance(err, UpstreamStatusError) and err.status == 502
