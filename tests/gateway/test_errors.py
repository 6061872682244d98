"""Every client mistake is a clear OpenAI-shaped 4xx naming the field; upstream failures
map onto 429 / 502 / 503 / 504; fail-over down the chain."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.mocks.openai_server import MockOpenAI
from tierline.config import parse_config
from tierline.gateway.server import GatewayThread

MSG = [{"role": "user", "content": "hi"}]


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    assert r.headers["x-request-id"].startswith("req_")
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(("raw", "param", "code"), [
    (b"{not json", None, "invalid_json"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None,
     "invalid_encoding"),
    (b"[1, 2]", None, "invalid_type"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model",
     "missing_required_parameter"),
    (b'{"model": "a/strong"}', "messages", "missing_required_parameter"),
    (b'{"model": "a/strong", "messages": []}', "messages", "invalid_value"),
    (b'{"model": "a/strong", "messages": [{"role": "wizard", "content": "x"}]}',
     "messages[0].role", "invalid_value"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": 5}]}',
     "messages[0].content", "invalid_type"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"temperature": "hot"}', "temperature", "invalid_type"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"temperature": 7}', "temperature", "invalid_value"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"max_tokens": 100000000}', "max_tokens", "invalid_value"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"max_tokens": 0}', "max_tokens", "invalid_value"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"frobnicate": 1}', "frobnicate", "unknown_parameter"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"stream": "yes"}', "stream", "invalid_type"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"tierline": {"qualty": 0.9}}', "tierline.qualty", "unknown_parameter"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"tierline": {"quality": 3}}', "tierline.quality", "invalid_value"),
    (b'{"model": "a/strong", "messages": [{"role": "user", "content": "x"}], '
     b'"response_format": {"type": "xml"}}', "response_format.type", "invalid_value"),
])
async def test_bad_input_is_a_named_400(client: httpx.AsyncClient, raw: bytes,
                                        param: str | None, code: str) -> None:
    r = await client.post("/chat/completions", content=raw,
                          headers={"content-type": "application/json"})
    err = assert_error(r, 400, param)
    assert err["code"] == code


async def test_bad_control_header(client: httpx.AsyncClient) -> None:
    r = await client.post("/chat/completions", json={"model": "a/strong", "messages": MSG},
                          headers={"x-tierline-zdr": "maybe"})
    assert_error(r, 400, "x-tierline-zdr")


@pytest.mark.parametrize(("header", "value"), [
    ("x-tierline-cost-weight", "inf"), ("x-tierline-max-loss", "nan"),
    ("x-tierline-max-cost-usd", "Infinity"), ("x-tierline-max-loss", "1.5"),
])
async def test_non_finite_or_out_of_range_knob_header(client: httpx.AsyncClient, header: str,
                                                      value: str) -> None:
    r = await client.post("/chat/completions", json={"model": "a/strong", "messages": MSG},
                          headers={header: value})
    assert_error(r, 400, header)


async def test_unknown_model_404(client: httpx.AsyncClient) -> None:
    err = assert_error(await client.post("/chat/completions", json={
        "model": "gpt-17", "messages": MSG}), 404, "model")
    assert err["code"] == "model_not_found"


async def test_body_too_large_413(client: httpx.AsyncClient) -> None:
    big = "x" * 70000
    r = await client.post("/chat/completions", json={
        "model": "a/strong", "messages": [{"role": "user", "content": big}]})
    assert_error(r, 413)


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404)
    assert_error(await client.get("/chat/completions"), 405)


async def test_a_body_with_a_utf8_bom_is_accepted(client: httpx.AsyncClient) -> None:
    raw = b'\xef\xbb\xbf{"model": "a/strong", "messages": [{"role": "user", "content": "x"}]}'
    r = await client.post("/chat/completions", content=raw,
                          headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


async def test_upstream_429_fails_over(client: httpx.AsyncClient,
                                       fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, b = fresh_mocks
    a.script(status=429, error_message="slow down", headers={"retry-after": "30"})
    r = await client.post("/chat/completions", json={
        "model": "pair", "messages": MSG, "tierline": {"strategy": "ordered"}})
    assert r.status_code == 200
    assert r.headers["x-tierline-model"] == "b/fast"
    assert len(a.requests) == 1 and len(b.requests) == 1


@pytest.mark.parametrize(("script", "status"), [
    ({"status": 500, "error_message": "boom"}, 502),
    ({"status": 429, "error_message": "slow"}, 429),
    ({"status": 429, "error_message": "slow", "headers": {"retry-after": "inf"}}, 429),
    ({"status": 429, "error_message": "slow", "headers": {"retry-after": "1e999"}}, 429),
    ({"status": 400, "error_message": "bad thing"}, 400),
    ({"status": 404, "error_message": "The model `x` does not exist"}, 502),  # our config
    ({"status": 413, "error_message": "request too large"}, 413),
    ({"raw": b"{nope"}, 502),
    ({"latency": 2.0}, 504),
])
async def test_single_deployment_failures(client: httpx.AsyncClient,
                                          fresh_mocks: tuple[MockOpenAI, MockOpenAI],
                                          script: dict[str, object], status: int) -> None:
    a, _ = fresh_mocks
    a.script(**script)
    r = await client.post("/chat/completions", json={"model": "a/strong", "messages": MSG})
    assert_error(r, status)
    assert r.headers["x-tierline-model"] == "a/strong"


async def test_stream_error_before_first_byte_fails_over(
        client: httpx.AsyncClient, fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, _ = fresh_mocks
    a.script(status=503, error_message="overloaded")
    async with client.stream("POST", "/chat/completions", json={
            "model": "pair", "messages": MSG, "stream": True,
            "tierline": {"strategy": "ordered"}}) as r:
        assert r.status_code == 200
        assert r.headers["x-tierline-model"] == "b/fast"
        lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"


@pytest.mark.parametrize("script", [
    {"stream_error": "error_object", "error_after": 0},
    {"stream_error": "finish_reason", "error_after": 0},
    {"malformed_chunk": True, "error_after": 0},
])
async def test_stream_failing_after_its_role_chunk_fails_over(
        client: httpx.AsyncClient, fresh_mocks: tuple[MockOpenAI, MockOpenAI],
        script: dict[str, object]) -> None:
    """OpenAI-style streams open with a role-only chunk; an upstream that fails right after
    it has sent the client nothing, so the request still fails over."""
    a, b = fresh_mocks
    a.script(**script)
    b.script(text="from b", chunks=2)
    async with client.stream("POST", "/chat/completions", json={
            "model": "pair", "messages": MSG, "stream": True,
            "tierline": {"strategy": "ordered"}}) as r:
        assert r.status_code == 200
        assert r.headers["x-tierline-model"] == "b/fast"
        lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert not any('"error"' in ln for ln in lines)
    assert "".join(lines).count('"role"') == 1  # a's role chunk never reached the client
    assert len(a.requests) == 1 and len(b.requests) == 1


async def test_error_inside_200_stream_becomes_error_event(
        client: httpx.AsyncClient, fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, _ = fresh_mocks
    a.script(stream_error="finish_reason", chunks=3)
    async with client.stream("POST", "/chat/completions", json={
            "model": "a/strong", "messages": MSG, "stream": True}) as r:
        lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert '"error"' in lines[-2]


async def test_nothing_survives_filters_503_names_reasons(client: httpx.AsyncClient) -> None:
    r = await client.post("/chat/completions", json={
        "model": "pair", "messages": MSG, "tierline": {"region": "eu", "zdr": True,
                                                       "open_weight": False},
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s",
                                                                    "schema": {}}}})
    err = assert_error(r, 503)
    msg = str(err["message"])
    assert "a/strong: region 'us' is not 'eu'" in msg
    assert "b/fast: lacks capability json_schema" in msg


async def test_per_deployment_timeouts(client: httpx.AsyncClient,
                                       fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, _ = fresh_mocks
    for stream in (False, True):
        a.script(latency=0.6)
        r = await client.post("/chat/completions", json={"model": "a/quick", "messages": MSG,
                                                         "stream": stream})
        assert_error(r, 504)
        assert "0.3s" in r.json()["error"]["message"]
        a.script(latency=0.6)  # the provider's own limit (1 s) lets it through
        r = await client.post("/chat/completions", json={"model": "a/strong", "messages": MSG,
                                                         "stream": stream})
        assert r.status_code == 200


SECRET = "sk-proj-SECRETkey0123456789"


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_echo_of_a_key_is_redacted(
        gateway: GatewayThread, client: httpx.AsyncClient,
        fresh_mocks: tuple[MockOpenAI, MockOpenAI], stream: bool) -> None:
    """An upstream may quote the key it was sent (OpenAI: "Incorrect API key provided: ...");
    neither the client nor the request log may see it - as a status error or inside a 200
    stream."""
    from tests.gateway.test_accounting import wait_rows

    a, _ = fresh_mocks
    if stream:
        a.script(stream_error="error_object", chunks=3,
                 error_message=f"auth failed for Bearer {SECRET}")
    else:
        a.script(status=401, error_message=f"Incorrect API key provided: {SECRET}.")
    r = await client.post("/chat/completions", json={
        "model": "a/strong", "messages": MSG, "stream": stream})
    assert SECRET not in r.text and "SECRETkey" not in r.text
    assert "[redacted]" in r.text
    rid = r.headers["x-request-id"]
    rows = await wait_rows(gateway.app.config.request_log_path(), {rid})
    assert "SECRETkey" not in repr(tuple(rows[rid]))


async def test_an_odd_format_provider_key_echoed_upstream_is_redacted(
        tmp_path: Path, fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    """A key no pattern would recognise (a custom vLLM key): the gateway knows its own
    configured credentials and takes them out of every error, JSON or in-stream."""
    a, _ = fresh_mocks
    odd = "vllm.Secret-2024/abc"
    raw = {"server": {"request_log": str(tmp_path / "r.sqlite3")},
           "catalog": {"builtin": False},
           "providers": {"v": {"base_url": a.url + "/v1", "api_key": odd,
                               "headers": {"x-org-token": "org/Tok.9"}}},
           "deployments": [{"name": "v/m", "provider": "v", "model": "m"}],
           "resilience": {"retries": 0}}
    with GatewayThread(parse_config(raw, "odd")) as g:
        async with httpx.AsyncClient(base_url=g.base_url, timeout=30) as c:
            a.script(status=401, error_message=f"Invalid API key '{odd}' (org org/Tok.9)")
            r = await c.post("/chat/completions", json={"model": "v/m", "messages": MSG})
            assert r.status_code == 502 and odd not in r.text and "org/Tok.9" not in r.text
            a.script(stream_error="error_object", chunks=3,
                     error_message=f"bad credentials {odd}")
            r = await c.post("/chat/completions", json={"model": "v/m", "messages": MSG,
                                                        "stream": True})
            assert '"error"' in r.text and odd not in r.text
            a.script(status=401, error_message=f"Invalid API key '{odd}'")
            r = await c.post("/chat/completions", json={"model": "v/m,v/m", "messages": MSG})
            assert odd not in r.text


@pytest.mark.parametrize(("headers", "ok"), [
    ({"origin": "http://evil.example"}, False),  # a web page posting from the browser
    ({"origin": "null"}, False),  # a sandboxed frame
    ({"host": "rebind.attacker.example"}, False),  # DNS rebinding
    ({"origin": "http://localhost:3000"}, True),  # a local dev UI
    ({"host": "localhost"}, True),
])
async def test_open_mode_refuses_browsers_from_elsewhere(client: httpx.AsyncClient,
                                                         headers: dict[str, str],
                                                         ok: bool) -> None:
    """No keys required = this machine only: a cross-site POST (text/plain needs no CORS
    preflight) or a rebound Host would otherwise spend the provider credits."""
    for method, path, body in (("POST", "/chat/completions",
                                 b'{"model": "a/strong", "messages": [{"role": "user", '
                                 b'"content": "hi"}]}'), ("GET", "/models", None)):
        r = await client.request(method, path, content=body,
                                 headers={"content-type": "text/plain", **headers})
        if ok:
            assert r.status_code == 200, r.text
        else:
            err = assert_error(r, 403)
            assert err["code"] in ("cross_origin_refused", "host_refused")
