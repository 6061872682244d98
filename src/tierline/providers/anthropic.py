"""Adapter for Anthropic's Messages API (`POST {base_url}/v1/messages`).

Translates both ways between OpenAI chat-completions and Messages:

- requests: system/developer messages → `system`; user / assistant / tool messages (text,
  images as base64 or url sources, assistant `tool_calls` → `tool_use`, `tool` messages →
  `tool_result` blocks in a user turn; consecutive same-role turns merged); `tools`,
  `tool_choice`, `parallel_tool_calls`, `max_tokens` (Anthropic requires it: the request's,
  else the deployment's `max_output_tokens`, else 4096), temperature (clamped to Anthropic's
  0..1), top_p, stop → stop_sequences, `user` → metadata.user_id.
- `response_format`: `json_schema` becomes a forced tool whose input schema is the schema
  (the only way every Claude model is held to a schema); its input is returned as the
  message `content` with finish_reason "stop". When the request also has its own tools, or
  for `json_object`, a system instruction asks for JSON instead (best effort).
- what cannot be translated (n > 1, logprobs, logit_bias, non-zero penalties, audio,
  non-function tools, file/audio content parts) raises `InvalidRequest(param=...)`.
- responses and streams: text → content, `tool_use` → `tool_calls`, thinking blocks are
  dropped; stop reasons mapped; usage with cache reads / writes folded into prompt_tokens.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import UpstreamBadResponse, UpstreamError
from tierline.providers.anthropic_wire import (
    API_VERSION,
    DEFAULT_BASE_URL,
    ERROR_STATUS,
    JSON_TOOL,
    build_payload,
    finish_reason_of,
    translate_response,
    usage_of,
)
from tierline.providers.http import HttpClient, iter_sse, loads_object, status_error
from tierline.providers.openai_compat import resolve_api_key
from tierline.types import JSON, ChatRequest, ChatResponse, StreamChunk, Usage


def stream_error_of(obj: JSON, deployment: str) -> UpstreamError:
    """An `error` event inside a 200 stream → the error its HTTP twin would have been."""
    err = obj.get("error")
    etype = err.get("type") if isinstance(err, dict) else None
    status = ERROR_STATUS.get(str(etype))
    if status is None:
        msg = err.get("message") if isinstance(err, dict) else err
        return UpstreamBadResponse(
            f"upstream {deployment!r} failed mid-stream: {str(msg or 'error')[:300]}",
            deployment=deployment)
    return status_error(status, orjson.dumps(obj), {}, deployment)


# ---------------------------------------------------------------------------------------


class AnthropicProvider:
    """Provider for `wire: anthropic` specs."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        base = (spec.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self.http = HttpClient(spec)
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        key = resolve_api_key(spec)
        if key:
            headers["x-api-key"] = key
        headers.update(spec.headers)
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    async def complete(self, request: ChatRequest, deployment: Deployment) -> ChatResponse:
        payload = build_payload(request, deployment, stream=False)
        json_tool = payload.get("tool_choice", {}).get("name") == JSON_TOOL
        status, headers, raw = await self.http.request(
            "POST", self.url, deployment=deployment.name, headers=self._headers,
            body=orjson.dumps(payload),
            timeout=self.http.timeouts.of_deployment(deployment).total)
        if status >= 400:
            raise status_error(status, raw, headers, deployment.name)
        msg = loads_object(raw, deployment.name, "response")
        if msg.get("type") == "error":
            raise stream_error_of(msg, deployment.name)
        return translate_response(msg, deployment, json_tool)

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamChunk]:
        name = deployment.name
        payload = build_payload(request, deployment, stream=True)
        json_tool = payload.get("tool_choice", {}).get("name") == JSON_TOOL
        t = self.http.timeouts.of_deployment(deployment)
        resp = await self.http.open_stream(self.url, deployment=name, first_token=t.first_token,
                                           headers=self._stream_headers,
                                           body=orjson.dumps(payload))
        if resp.status >= 400:
            raise await self.http.read_error(resp, name)
        try:
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                raw = await resp.read()
                if raw.startswith(b"{") and b'"error"' in raw:
                    raise status_error(502, raw, resp.headers, name)
                raise UpstreamBadResponse(f"upstream {name!r} did not answer with an event "
                                          "stream", deployment=name)
            state = _StreamState(deployment, json_tool)
            async for event, data in iter_sse(resp, deployment=name,
                                              first_timeout=t.first_token,
                                              idle_timeout=t.idle, total_timeout=t.total):
                obj = loads_object(data, name, "a stream event")
                etype = obj.get("type") or event
                if etype == "error":
                    raise stream_error_of(obj, name)
                for chunk in state.feed(etype, obj):
                    yield chunk
                if state.done:
                    break
            if not state.done:
                raise UpstreamBadResponse(f"upstream {name!r} stream ended before "
                                          "message_stop", deployment=name)
        finally:
            resp.release()

    async def aclose(self) -> None:
        await self.http.aclose()


class _StreamState:
    """Turns Anthropic stream events into OpenAI chunks."""

    def __init__(self, deployment: Deployment, json_tool: bool) -> None:
        self.deployment = deployment
        self.json_tool = json_tool
        self.id = ""
        self.model = deployment.model
        self.created = int(time.time())
        self.usage: JSON = {}
        self.stop_reason: Any = None
        self.tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool index
        self.json_blocks: set[int] = set()  # blocks of the forced response_format tool
        self.started = False
        self.done = False

    def _chunk(self, delta: JSON, finish: str | None = None) -> StreamChunk:
        return StreamChunk(data={
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}]})

    def _merge_usage(self, u: Any) -> None:
        if isinstance(u, dict):
            for k, v in u.items():
                if isinstance(v, int):
                    self.usage[k] = v

    def feed(self, etype: str, ev: JSON) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        if etype == "message_start":
            msg = ev.get("message") or {}
            self.id = str(msg.get("id") or "")
            self.model = str(msg.get("model") or self.model)
            self._merge_usage(msg.get("usage"))
            if not self.started:
                self.started = True
                out.append(self._chunk({"role": "assistant", "content": ""}))
        elif etype == "content_block_start":
            idx = int(ev.get("index", 0))
            block = ev.get("content_block") or {}
            if block.get("type") == "tool_use":
                if self.json_tool and block.get("name") == JSON_TOOL:
                    self.json_blocks.add(idx)
                else:
                    ti = len(self.tool_index)
                    self.tool_index[idx] = ti
                    out.append(self._chunk({"tool_calls": [{
                        "index": ti, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}]}))
            elif block.get("type") == "text" and block.get("text"):
                out.append(self._chunk({"content": block["text"]}))
        elif etype == "content_block_delta":
            idx = int(ev.get("index", 0))
            delta = ev.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                if delta.get("text"):
                    out.append(self._chunk({"content": delta["text"]}))
            elif dtype == "input_json_delta":
                frag = delta.get("partial_json") or ""
                if frag and idx in self.json_blocks:
                    out.append(self._chunk({"content": frag}))
                elif frag and idx in self.tool_index:
                    out.append(self._chunk({"tool_calls": [{
                        "index": self.tool_index[idx], "function": {"arguments": frag}}]}))
            # thinking_delta / signature_delta / citations: not part of the OpenAI format
        elif etype == "message_delta":
            d = ev.get("delta") or {}
            if d.get("stop_reason"):
                self.stop_reason = d["stop_reason"]
            self._merge_usage(ev.get("usage"))
        elif etype == "message_stop":
            finish = finish_reason_of(self.stop_reason)
            if self.json_tool and finish == "tool_calls" and not self.tool_index:
                finish = "stop"
            out.append(self._chunk({}, finish))
            usage = usage_of(self.usage) if self.usage else Usage(estimated=True)
            out.append(StreamChunk(data={
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": usage.to_openai()},
                usage=usage))
            self.done = True
        # ping and unknown events are ignored
        return out
