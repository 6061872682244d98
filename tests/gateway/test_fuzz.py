"""Fuzzing the HTTP API with hypothesis: whatever the body, headers or path, the gateway
answers with a well-formed response and never a 500."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import gateway_config
from tests.mocks.openai_server import MockOpenAI
from tierline.gateway.server import GatewayThread


class ThreadedMock:
    """A MockOpenAI on its own event loop thread (so synchronous tests can call it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.mock = MockOpenAI()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> MockOpenAI:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.mock.start(), self.loop).result(10)
        return self.mock

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.mock.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with ThreadedMock() as a, ThreadedMock() as b:
        cfg = gateway_config(tmp, a.url, b.url)
        with GatewayThread(cfg) as gw, httpx.Client(base_url=gw.root_url, timeout=30) as c:
            yield c


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
KEYS = ["model", "messages", "stream", "stream_options", "max_tokens", "temperature", "top_p",
        "n", "stop", "seed", "tools", "tool_choice", "response_format", "logprobs", "user",
        "tierline", "max_completion_tokens", "bogus"]
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"])},
    optional={"content": json_values}), max_size=3)
models = st.sampled_from(["a/strong", "b/fast", "auto", "pair", "tier:fast", "nope", ""])
bodies = st.fixed_dictionaries(
    {}, optional={k: (models if k == "model" else messages if k == "messages" else json_values)
                  for k in KEYS})


def check(r: httpx.Response) -> None:
    assert r.status_code < 500 or r.status_code in (502, 503, 504), r.text
    assert r.status_code != 500
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_fuzz_json_bodies(fuzz_client: httpx.Client, body: dict[str, Any]) -> None:
    if body.get("model") == "local/smollm2-135m-instruct":
        return
    if body.get("model") == "auto":
        body["tierline"] = {"models": ["a/strong"]}
    r = fuzz_client.post("/v1/chat/completions", content=orjson.dumps(body),
                         headers={"content-type": "application/json"})
    check(r)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=300),
       header=st.sampled_from(["x-tierline-quality", "x-tierline-max-loss",
                               "x-tierline-cost-weight", "x-tierline-zdr", "x-tierline-models",
                               "x-tierline-region", "x-tierline-bogus", "x-other"]),
       value=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                     max_size=12).map(str.strip))
def test_fuzz_raw_bytes_and_headers(fuzz_client: httpx.Client, raw: bytes, header: str,
                                    value: str) -> None:
    r = fuzz_client.post("/v1/chat/completions", content=raw, headers={header: value})
    check(r)
    ok = orjson.dumps({"model": "a/strong", "messages": [{"role": "user", "content": "x"}]})
    check(fuzz_client.post("/v1/chat/completions", content=ok, headers={header: value}))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.text(alphabet="abcdefv1/_-.%", max_size=20),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_fuzz_paths_and_methods(fuzz_client: httpx.Client, path: str, method: str) -> None:
    r = fuzz_client.request(method, "/" + path.lstrip("/"))
    assert r.status_code != 500
