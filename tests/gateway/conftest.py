"""A real gateway on a loopback port in front of two real mock upstreams (OpenAI wire
format) and the real embedded model, with a real SQLite request log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.mocks.openai_server import MockOpenAI
from tierline.config import Config, parse_config
from tierline.gateway.server import GatewayThread

LOCAL = "local/smollm2-135m-instruct"


def gateway_config(tmp: Path, url_a: str, url_b: str, **extra: Any) -> Config:
    raw: dict[str, Any] = {
        "server": {"request_log": str(tmp / "requests.sqlite3"), "max_body_bytes": 65536},
        "catalog": {"builtin": False},
        "providers": {
            "mocka": {"wire": "openai", "base_url": url_a + "/v1", "requires_key": False,
                      "region": "us", "first_token_timeout": 1, "idle_timeout": 1,
                      "total_timeout": 1.5},
            "mockb": {"wire": "openai", "base_url": url_b + "/v1", "api_key": "sk-secret-b",
                      "region": "eu", "zero_data_retention": True, "first_token_timeout": 2,
                      "idle_timeout": 2, "total_timeout": 5},
            "local": {"wire": "embedded", "requires_key": False, "region": "local",
                      "zero_data_retention": True},
        },
        "deployments": [
            {"name": "a/strong", "provider": "mocka", "model": "strong-1",
             "price": {"input": 2.5, "cached_input": 1.25, "output": 10.0},
             "context_window": 128000, "capabilities": ["streaming", "tools", "json_schema"],
             "tier": "strong", "profile": "gpt-4-1106-preview"},
            {"name": "a/quick", "provider": "mocka", "model": "strong-1",
             "total_timeout": 0.3, "first_token_timeout": 0.3},
            {"name": "b/fast", "provider": "mockb", "model": "fast-1",
             "price": {"input": 0.6, "output": 0.6}, "context_window": 32000,
             "capabilities": ["streaming", "tools"], "open_weight": True, "tier": "fast",
             "profile": "mixtral-8x7b-instruct-v0.1"},
            {"name": LOCAL, "provider": "local", "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
             "price": {"input": 0, "output": 0}, "context_window": 8192, "n_ctx": 2048,
             "capabilities": ["streaming", "json_schema"], "open_weight": True,
             "tier": "cheap"},
        ],
        "routing": {"groups": {"pair": ["a/strong", "b/fast"]}},
        "resilience": {"retries": 0, "breaker_failures": 1000},
    }
    for k, v in extra.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(raw, "test-config")


@pytest.fixture(scope="session")
async def mocks() -> AsyncIterator[tuple[MockOpenAI, MockOpenAI]]:
    a, b = MockOpenAI(), MockOpenAI(require_key=True)
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture
def fresh_mocks(mocks: tuple[MockOpenAI, MockOpenAI]) -> tuple[MockOpenAI, MockOpenAI]:
    for m in mocks:
        m.reset()
    return mocks


@pytest.fixture(scope="session")
def gateway(mocks: tuple[MockOpenAI, MockOpenAI], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[GatewayThread]:
    tmp = tmp_path_factory.mktemp("gw")
    a, b = mocks
    with GatewayThread(gateway_config(tmp, a.url, b.url)) as g:
        yield g


@pytest.fixture
async def client(gateway: GatewayThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as c:
        yield c
