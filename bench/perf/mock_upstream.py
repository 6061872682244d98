"""A fast mock OpenAI chat-completions upstream for benchmarks (loopback only).

Raw asyncio protocol + httptools parser on uvloop: one process serves tens of thousands of
small requests per second, so it is never the bottleneck of a gateway benchmark.

    python bench/perf/mock_upstream.py --port 18000 [--latency-ms 0] [--chunks 20]

- POST .../chat/completions, non-streaming: a chat.completion with usage.
- `"stream": true`: `--chunks` content chunks, then a usage chunk when
  `stream_options.include_usage` is true, then `data: [DONE]` (chunked encoding).
- Latency before the response (or before the first chunk) is `--latency-ms`, or the number in
  the upstream model id `mock-<N>` (e.g. `mock-50` waits 50 ms): gateways rewrite the model to
  the upstream id, so one mock serves several latencies to every gateway under test.
- `--chunk-interval-ms` spaces the stream chunks (default 0: all written at once).
- Chaos (soak): a model id containing `err<NNN>` (e.g. `mock-err503`) answers HTTP NNN with an
  OpenAI error body; `mock-cut` streams 5 chunks then drops the connection.
- GET anything else: 200 `{"status":"ok"}` (health).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
from typing import Any

import httptools
import orjson

_LAT_RE = re.compile(r"-(\d+)(?:ms)?$")
_ERR_RE = re.compile(r"err(\d{3})")
PROMPT_TOKENS = 12


def _completion(model: str, n_words: int) -> bytes:
    text = " ".join(f"tok{i}" for i in range(n_words))
    return orjson.dumps({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000,
        "model": model, "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}, "logprobs": None}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n_words,
                  "total_tokens": PROMPT_TOKENS + n_words},
    })


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
        "model": model, "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    })


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Responses:
    """Pre-encoded response bytes per upstream model id (built once, cached)."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self._cache: dict[str, tuple[bytes, list[bytes], bytes, bytes]] = {}

    def get(self, model: str) -> tuple[bytes, list[bytes], bytes, bytes]:
        got = self._cache.get(model)
        if got is None:
            body = _completion(model, self.chunks)
            plain = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
            events = [_http_chunk(b"data: " + _chunk(model, {"role": "assistant", "content": ""},
                                                      None) + b"\n\n")]
            for i in range(self.chunks):
                last = i == self.chunks - 1
                events.append(_http_chunk(b"data: " + _chunk(
                    model, {"content": f"tok{i} "}, "stop" if last else None) + b"\n\n"))
            usage = orjson.dumps({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": self.chunks,
                          "total_tokens": PROMPT_TOKENS + self.chunks}})
            usage_ev = _http_chunk(b"data: " + usage + b"\n\n")
            done = _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
            head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
            events[0] = head + events[0]
            got = (plain, events, usage_ev, done)
            self._cache[model] = got
        return got


HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n" \
         b'{"status":"ok"}'
BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 52\r\n\r\n" \
      b'{"error":{"message":"bad request","type":"invalid"}}'


class MockProtocol(asyncio.Protocol):
    def __init__(self, srv: MockServer) -> None:
        self.srv = srv
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.busy = False
        self.queue: list[tuple[bytes, bytes, bytes]] = []

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        self.queue.append((method, self.url, b"".join(self.body)))
        if not self.busy:
            self._next()

    # serving
    def _next(self) -> None:
        while self.queue and self.transport is not None:
            method, _url, body = self.queue.pop(0)
            if method != b"POST":
                self.transport.write(HEALTH)
                continue
            try:
                req = orjson.loads(body)
                model = str(req.get("model") or "mock")
            except (orjson.JSONDecodeError, AttributeError):
                self.transport.write(BAD)
                continue
            err = self.srv.error_for(model)
            if err is not None:
                self.transport.write(err)
                continue
            stream = bool(req.get("stream"))
            if stream and "cut" in model:
                _plain, events, _u, _d = self.srv.responses.get(model)
                self.transport.writelines(events[:5])
                self.transport.close()
                return
            opts = req.get("stream_options")
            usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
            delay = self.srv.latency_for(model)
            if delay > 0 or (stream and self.srv.interval > 0):
                self.busy = True
                asyncio.get_running_loop().call_later(
                    delay, self._respond, model, stream, usage, 0)
                return
            self._respond_now(model, stream, usage)

    def _respond_now(self, model: str, stream: bool, usage: bool) -> None:
        assert self.transport is not None
        plain, events, usage_ev, done = self.srv.responses.get(model)
        if not stream:
            self.transport.write(plain)
        else:
            self.transport.writelines([*events, usage_ev, done] if usage else [*events, done])

    def _respond(self, model: str, stream: bool, usage: bool, i: int) -> None:
        if self.transport is None:
            return
        if not stream or self.srv.interval <= 0:
            self._respond_now(model, stream, usage)
        else:
            _plain, events, usage_ev, done = self.srv.responses.get(model)
            if i < len(events):
                self.transport.write(events[i])
                asyncio.get_running_loop().call_later(
                    self.srv.interval, self._respond, model, stream, usage, i + 1)
                return
            self.transport.writelines([usage_ev, done] if usage else [done])
        self.busy = False
        self._next()


class MockServer:
    def __init__(self, latency_ms: float, chunks: int, interval_ms: float) -> None:
        self.latency = latency_ms / 1000.0
        self.interval = interval_ms / 1000.0
        self.responses = Responses(chunks)
        self._lat: dict[str, float] = {}

    def error_for(self, model: str) -> bytes | None:
        m = _ERR_RE.search(model)
        if not m:
            return None
        body = orjson.dumps({"error": {"message": f"mock error {m.group(1)}",
                                       "type": "server_error", "code": None}})
        return (b"HTTP/1.1 %s Mock\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (m.group(1).encode(), len(body), body))

    def latency_for(self, model: str) -> float:
        got = self._lat.get(model)
        if got is None:
            m = _LAT_RE.search(model)
            got = int(m.group(1)) / 1000.0 if m else self.latency
            self._lat[model] = got
        return got


async def serve(host: str, port: int, srv: MockServer) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(srv), host, port, backlog=4096,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream on http://{host}:{port}/v1 pid {os.getpid()}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--chunk-interval-ms", type=float, default=0.0)
    a = ap.parse_args(argv)
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve(a.host, a.port, MockServer(a.latency_ms, a.chunks, a.chunk_interval_ms)))


if __name__ == "__main__":
    main()
