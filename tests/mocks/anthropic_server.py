"""A scriptable mock of Anthropic's Messages API (`POST /v1/messages`), JSON and SSE.

    async with MockAnthropic() as m:
        m.script(text="Hello", cache_read_input_tokens=5)
        m.script(tool_calls=[("get_weather", {"city": "Paris"})])
        m.script(status=529, error_type="overloaded_error", error_message="Overloaded")
        m.script(stream_error=("overloaded_error", "Overloaded"))   # `error` event mid-stream
        m.script(raw=b"{not json")                                  # malformed 200 body
        ProviderSpec(name="anthropic", wire="anthropic", base_url=m.url, api_key="k")

The wire format follows Anthropic's docs: a `message` object for non-streaming calls; for
`"stream": true` the events message_start, content_block_start, ping,
content_block_delta (text_delta / input_json_delta), content_block_stop, message_delta
(stop_reason + cumulative output usage), message_stop; errors as
`{"type": "error", "error": {"type": ..., "message": ...}}` (HTTP status per error type, 529
for overloaded_error), mid-stream as an `error` event.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.mocks.base import MockServer, json_response, split_text, sse_send, sse_start

ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
STATUS_ERROR = {v: k for k, v in ERROR_STATUS.items()}

_ids = itertools.count(1)


@dataclass
class AnthropicScript:
    text: str | None = "Hello from the mock."
    # (name, input) or (id, name, input)
    tool_calls: list[tuple[Any, ...]] = field(default_factory=list)
    content: list[dict[str, Any]] | None = None  # explicit content blocks (override the above)
    stop_reason: str | None = None  # default: tool_use when tool calls, else end_turn
    stop_sequence: str | None = None
    input_tokens: int = 12
    output_tokens: int = 7
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    model: str | None = None  # default: echo the request's model
    chunks: int = 3  # text deltas per text block / JSON fragments per tool block
    # errors
    status: int = 200
    error_type: str | None = None  # with status, or alone (status from ERROR_STATUS)
    error_message: str = "error"
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a 200 body sent verbatim (e.g. malformed JSON)
    raw_content_type: str = "application/json"
    stream_error: tuple[str, str] | None = None  # (type, message) `error` event mid-stream
    error_after: int = 3  # ...after this many events
    truncate_after: int | None = None  # stream closes after N events, no message_stop
    latency: float = 0.0  # before the response starts
    delay: float = 0.0  # between stream events
    ping: bool = True

    def blocks(self) -> list[dict[str, Any]]:
        if self.content is not None:
            return self.content
        out: list[dict[str, Any]] = []
        if self.text:
            out.append({"type": "text", "text": self.text})
        for tc in self.tool_calls:
            if len(tc) == 2:
                tid, name, inp = f"toolu_{next(_ids):04d}", tc[0], tc[1]
            else:
                tid, name, inp = tc
            out.append({"type": "tool_use", "id": tid, "name": name, "input": inp})
        return out

    def final_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(b["type"] == "tool_use" for b in self.blocks()) else "end_turn"

    def usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        }


def error_body(etype: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": etype, "message": message},
            "request_id": f"req_{next(_ids):06d}"}


class MockAnthropic(MockServer[AnthropicScript]):
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    def default_script(self) -> AnthropicScript:
        return AnthropicScript()

    def script(self, **kw: Any) -> AnthropicScript:
        return self.push(AnthropicScript(**kw))

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        s = self.next_script()
        if s.latency:
            await asyncio.sleep(s.latency)
        # what the real API checks first
        if not request.headers.get("x-api-key"):
            return json_response(error_body("authentication_error", "x-api-key header is "
                                            "required"), status=401)
        if not request.headers.get("anthropic-version"):
            return json_response(error_body("invalid_request_error",
                                            "anthropic-version: header is required"), 400)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return json_response(error_body("invalid_request_error", "invalid JSON"), 400)
        for required in ("model", "messages", "max_tokens"):
            if required not in body:
                return json_response(error_body("invalid_request_error",
                                                f"{required}: Field required"), 400)
        if s.status != 200 or s.error_type:
            etype = s.error_type or STATUS_ERROR.get(s.status, "api_error")
            status = s.status if s.status != 200 else ERROR_STATUS.get(etype, 500)
            return json_response(error_body(etype, s.error_message), status=status,
                                 headers=s.headers)
        if s.raw is not None:
            return web.Response(body=s.raw, status=200, content_type=s.raw_content_type,
                                headers=s.headers)
        model = s.model or body["model"]
        msg_id = f"msg_{next(_ids):06d}"
        if not body.get("stream"):
            return json_response({
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": s.blocks(), "stop_reason": s.final_stop_reason(),
                "stop_sequence": s.stop_sequence, "usage": s.usage(),
            }, headers=s.headers)
        return await self._stream(request, s, msg_id, model)

    def _events(self, s: AnthropicScript, msg_id: str, model: str) -> list[tuple[str, Any]]:
        start_usage = s.usage()
        start_usage["output_tokens"] = 1
        ev: list[tuple[str, Any]] = [("message_start", {
            "type": "message_start",
            "message": {"id": msg_id, "type": "message", "role": "assistant", "content": [],
                        "model": model, "stop_reason": None, "stop_sequence": None,
                        "usage": start_usage}})]
        for i, b in enumerate(s.blocks()):
            if b["type"] == "text":
                ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text",
                                                                     "text": ""}}))
                if i == 0 and s.ping:
                    ev.append(("ping", {"type": "ping"}))
                for piece in split_text(b["text"], s.chunks):
                    ev.append(("content_block_delta", {
                        "type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": piece}}))
            elif b["type"] == "tool_use":
                ev.append(("content_block_start", {
                    "type": "content_block_start", "index": i,
                    "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"],
                                      "input": {}}}))
                # the real API opens with an empty fragment
                frags = ["", *split_text(orjson.dumps(b["input"]).decode(), s.chunks)]
                for frag in frags:
                    ev.append(("content_block_delta", {
                        "type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": frag}}))
            elif b["type"] == "thinking":
                ev.append(("content_block_start", {
                    "type": "content_block_start", "index": i,
                    "content_block": {"type": "thinking", "thinking": ""}}))
                ev.append(("content_block_delta", {
                    "type": "content_block_delta", "index": i,
                    "delta": {"type": "thinking_delta", "thinking": b.get("thinking", "")}}))
                ev.append(("content_block_delta", {
                    "type": "content_block_delta", "index": i,
                    "delta": {"type": "signature_delta", "signature": "sig"}}))
            ev.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        ev.append(("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": s.final_stop_reason(), "stop_sequence": s.stop_sequence},
            "usage": {"output_tokens": s.output_tokens}}))
        ev.append(("message_stop", {"type": "message_stop"}))
        return ev

    async def _stream(self, request: web.Request, s: AnthropicScript, msg_id: str,
                      model: str) -> web.StreamResponse:
        resp = await sse_start(request, s.headers)
        for n, (event, data) in enumerate(self._events(s, msg_id, model)):
            if s.stream_error is not None and n == s.error_after:
                await sse_send(resp, error_body(*s.stream_error), event="error")
                break
            if s.truncate_after is not None and n == s.truncate_after:
                break
            await sse_send(resp, data, event=event, delay=s.delay)
        await resp.write_eof()
        return resp
