"""How a stream leaves the gateway: the first token is written on its own, before the rest
of an upstream read that carried the whole answer; the rest goes out together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tierline.config import parse_config
from tierline.gateway.app import create_app

WORDS = [f"w{i} " for i in range(12)]


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"


def _whole_stream() -> bytes:
    events = [_event({"role": "assistant", "content": ""})]
    events += [_event({"content": w}) for w in WORDS]
    events.append(_event({}, "stop"))
    events.append(b"data: " + orjson.dumps({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 12,
                                 "total_tokens": 17}}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    body = b"".join(events)
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


@pytest.fixture
async def one_read_upstream() -> AsyncIterator[str]:
    """An upstream that sends the whole event stream in one write."""
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":", 1)[1])
                await r.readexactly(n)
                w.write(_whole_stream())
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"
    srv.close()
    await srv.wait_closed()


async def test_first_token_is_written_before_the_rest(one_read_upstream: str) -> None:
    gw = create_app(parse_config({
        "server": {"request_log": "off"},
        "catalog": {"builtin": False},
        "providers": {"up": {"wire": "openai", "base_url": one_read_upstream,
                             "requires_key": False}},
        "deployments": [{"name": "m", "provider": "up", "model": "m",
                         "price": {"input": 1, "output": 1}, "context_window": 8000}],
    }, "test"))
    await gw.startup()
    body = orjson.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": "hi"}]})
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "query_string": b"", "client": ("127.0.0.1", 1), "http_version": "1.1",
             "scheme": "http", "root_path": ""}
    try:
        await gw(scope, receive, send)
    finally:
        await gw.shutdown()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m["body"] for m in sent[1:]]
    first = bodies[0].decode()
    # role chunk + first word only; everything else of that read comes in later writes
    assert '"content":"w0 "' in first and '"content":"w1 "' not in first
    rest = b"".join(bodies[1:]).decode()
    assert all(f'"content":"{w}"' in rest for w in WORDS[1:])
    assert rest.endswith("data: [DONE]\n\n") and '"usage"' in rest
    assert len(bodies) == 2  # the rest of the read is written together, not event by event
