"""A scriptable mock of an OpenAI chat-completions server (base URL: `m.url + "/v1"`).

    async with MockOpenAI() as m:
        m.script(text="Hello", chunks=5, prompt_tokens=9, cached_tokens=4)
        m.script(tool_calls=[("get_weather", {"city": "Paris"})])
        m.script(status=429, error_message="Rate limit reached", headers={"retry-after": "3"})
        m.script(stream_error="finish_reason")     # a 200 stream that fails mid-way
        m.script(truncate=True)                    # stream without `data: [DONE]`
        m.script(raw=b"{nope")                     # malformed JSON body
        m.script(latency=0.5, delay=0.05)          # before headers / between chunks
        ProviderSpec(name="mock", base_url=m.url + "/v1", api_key="sk-test")

Serves `POST /v1/chat/completions` (and `/chat/completions`). Non-streaming answers are
`chat.completion` objects; `"stream": true` answers are SSE `data:` lines of
`chat.completion.chunk` objects (role delta first, `chunks` content deltas, tool call
deltas, a finish_reason chunk, a usage chunk with `choices: []` only when
`stream_options.include_usage` is true, then `data: [DONE]`). Errors use OpenAI's body
`{"error": {"message", "type", "param", "code"}}`. `MockOpenAI(require_key=True)` answers
401 to requests without a bearer token. The last request body is `m.requests[-1].json`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.mocks.base import MockServer, json_response, split_text, sse_send, sse_start

_ids = itertools.count(1)

ERROR_TYPES = {400: ("invalid_request_error", None), 401: ("invalid_request_error",
                                                            "invalid_api_key"),
               403: ("permission_error", None), 404: ("invalid_request_error",
                                                      "model_not_found"),
               429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None),
               502: ("server_error", None), 503: ("server_error", "engine_overloaded")}


@dataclass
class OpenAIScript:
    text: str | None = "Hello from the mock."
    tool_calls: list[tuple[Any, ...]] = field(default_factory=list)  # (name, args) / (id, ...)
    chunks: int = 3  # content deltas (and argument fragments per tool call)
    finish_reason: str | None = None  # default: tool_calls when tool calls, else stop
    model: str | None = None  # default: echo the request's model
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    usage: bool = True  # include usage (non-stream; streams also need include_usage)
    latency: float = 0.0  # before the response headers
    delay: float = 0.0  # between stream chunks
    # errors
    status: int = 200
    error_message: str = "error"
    error_type: str | None = None
    error_code: str | None = None
    error_param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a body sent verbatim with status 200
    raw_content_type: str = "application/json"
    stream_error: str | None = None  # "finish_reason" or "error_object", after error_after
    error_after: int = 2  # ...content chunks
    truncate: bool = False  # stream ends without [DONE]
    malformed_chunk: bool = False  # a non-JSON data line after error_after chunks

    def calls(self) -> list[tuple[str, str, str]]:
        out = []
        for tc in self.tool_calls:
            if len(tc) == 2:
                out.append((f"call_{next(_ids):04d}", tc[0], orjson.dumps(tc[1]).decode()))
            else:
                out.append((tc[0], tc[1], orjson.dumps(tc[2]).decode()))
        return out

    def finish(self) -> str:
        if self.finish_reason:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    def usage_obj(self) -> dict[str, Any]:
        u: dict[str, Any] = {"prompt_tokens": self.prompt_tokens,
                             "completion_tokens": self.completion_tokens,
                             "total_tokens": self.prompt_tokens + self.completion_tokens,
                             "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
                             "completion_tokens_details": {
                                 "reasoning_tokens": self.reasoning_tokens}}
        return u


def openai_error(status: int, message: str, etype: str | None = None,
                 code: str | None = None, param: str | None = None) -> dict[str, Any]:
    dt, dc = ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": etype or dt, "param": param,
                      "code": code if code is not None else dc}}


class MockOpenAI(MockServer[OpenAIScript]):
    def __init__(self, require_key: bool = False) -> None:
        super().__init__()
        self.require_key = require_key

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)

    def default_script(self) -> OpenAIScript:
        return OpenAIScript()

    def script(self, **kw: Any) -> OpenAIScript:
        return self.push(OpenAIScript(**kw))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        s = self.next_script()
        if s.latency:
            await asyncio.sleep(s.latency)
        if self.require_key and not request.headers.get("authorization", "").startswith(
                "Bearer "):
            return json_response(openai_error(401, "You didn't provide an API key."), 401)
        if s.status != 200:
            return json_response(openai_error(s.status, s.error_message, s.error_type,
                                              s.error_code, s.error_param),
                                 status=s.status, headers=s.headers)
        if s.raw is not None:
            return web.Response(body=s.raw, content_type=s.raw_content_type,
                                headers=s.headers)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return json_response(openai_error(400, "We could not parse the JSON body."), 400)
        if not body.get("model") or not isinstance(body.get("messages"), list):
            return json_response(openai_error(400, "model and messages are required",
                                              param="messages"), 400)
        model = s.model or body["model"]
        cid = f"chatcmpl-mock{next(_ids):06d}"
        created = int(time.time())
        calls = s.calls()
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": s.text,
                                       "refusal": None}
            if calls:
                message["tool_calls"] = [{"id": i, "type": "function",
                                          "function": {"name": n, "arguments": a}}
                                         for i, n, a in calls]
            out: dict[str, Any] = {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": s.finish()}],
                "system_fingerprint": "fp_mock"}
            if s.usage:
                out["usage"] = s.usage_obj()
            return json_response(out, headers=s.headers)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return c

        resp = await sse_start(request, s.headers)
        await sse_send(resp, chunk({"role": "assistant", "content": "", "refusal": None}))
        fail = bool(s.stream_error or s.malformed_chunk)
        for n, piece in enumerate(split_text(s.text or "", s.chunks)):
            if fail and n == s.error_after:
                break
            await sse_send(resp, chunk({"content": piece}), delay=s.delay)
        if fail:
            if s.malformed_chunk:
                await sse_send(resp, b'{"id": "chatcmpl-broken", "choices": [')
            elif s.stream_error == "finish_reason":
                await sse_send(resp, chunk({}, "error"))
            else:
                msg = s.error_message if s.error_message != "error" else \
                    "Upstream provider failed"
                await sse_send(resp, {"error": {"message": msg, "code": 502}})
            await sse_send(resp, b"[DONE]")
            await resp.write_eof()
            return resp
        for k, (i, name, args) in enumerate(calls):
            await sse_send(resp, chunk({"tool_calls": [{
                "index": k, "id": i, "type": "function",
                "function": {"name": name, "arguments": ""}}]}), delay=s.delay)
            for frag in split_text(args, s.chunks):
                await sse_send(resp, chunk({"tool_calls": [{
                    "index": k, "function": {"arguments": frag}}]}), delay=s.delay)
        await sse_send(resp, chunk({}, s.finish()), delay=s.delay)
        if include_usage and s.usage:
            await sse_send(resp, {"id": cid, "object": "chat.completion.chunk",
                                  "created": created, "model": model,
                                  "system_fingerprint": "fp_mock", "choices": [],
                                  "usage": s.usage_obj()})
        if not s.truncate:
            await sse_send(resp, b"[DONE]")
        await resp.write_eof()
        return resp
