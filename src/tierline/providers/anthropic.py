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
from tierline.errors import InvalidRequest, UpstreamBadResponse, UpstreamError
from tierline.providers.http import HttpClient, iter_sse, loads_object, status_error
from tierline.providers.openai_compat import resolve_api_key
from tierline.types import JSON, ChatRequest, ChatResponse, StreamChunk, Usage

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
JSON_TOOL = "json_response"  # the forced tool standing in for response_format json_schema

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types → the HTTP status they come with (for errors inside a stream)
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# ---------------------------------------------------------------------------------------
# requests


def _text_of(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, p in enumerate(content):
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            else:
                raise InvalidRequest(f"only text content is supported in {param}",
                                     param=f"{param}[{j}]")
        return "\n".join(parts)
    raise InvalidRequest(f"{param} must be a string or a list of content parts", param=param)


def _image_block(part: JSON, param: str) -> JSON:
    iu = part.get("image_url")
    url = iu.get("url") if isinstance(iu, dict) else iu
    if not isinstance(url, str) or not url:
        raise InvalidRequest("image_url.url is required", param=f"{param}.image_url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, enc = header.partition(";")
        if not sep or enc != "base64" or not media_type:
            raise InvalidRequest("image data URLs must be base64-encoded "
                                 "(data:<media type>;base64,...)", param=f"{param}.image_url")
        return {"type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("image_url.url must be an http(s) or data URL",
                         param=f"{param}.image_url")


def _content_blocks(content: Any, param: str, *, images: bool) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string or a list of content parts",
                             param=param)
    out: list[JSON] = []
    for j, p in enumerate(content):
        pp = f"{param}[{j}]"
        if not isinstance(p, dict):
            raise InvalidRequest("content parts must be objects", param=pp)
        kind = p.get("type")
        if kind in ("text", "refusal"):
            text = p.get("text") if kind == "text" else p.get("refusal")
            if not isinstance(text, str):
                raise InvalidRequest("text parts need a string 'text'", param=pp)
            if not text:
                continue  # Anthropic rejects empty text blocks
            block: JSON = {"type": "text", "text": text}
            if isinstance(p.get("cache_control"), dict):
                block["cache_control"] = p["cache_control"]
            out.append(block)
        elif kind == "image_url" and images:
            out.append(_image_block(p, pp))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported by this "
                                 "deployment", param=f"{pp}.type")
    return out


def _tool_use_block(tc: Any, param: str) -> JSON:
    if not isinstance(tc, dict) or tc.get("type", "function") != "function":
        raise InvalidRequest("only function tool calls are supported", param=param)
    fn = tc.get("function") or {}
    args = fn.get("arguments") or "{}"
    try:
        inp = orjson.loads(args) if isinstance(args, str) else args
    except orjson.JSONDecodeError as e:
        raise InvalidRequest("tool call arguments must be a JSON object",
                             param=f"{param}.function.arguments") from e
    if not isinstance(inp, dict):
        raise InvalidRequest("tool call arguments must be a JSON object",
                             param=f"{param}.function.arguments")
    return {"type": "tool_use", "id": str(tc.get("id") or ""), "name": str(fn.get("name")),
            "input": inp}


def _translate_messages(messages: list[JSON]) -> tuple[list[JSON], list[JSON]]:
    """OpenAI messages → (system blocks, Anthropic messages)."""
    system: list[JSON] = []
    turns: list[tuple[str, list[JSON]]] = []

    def add(role: str, blocks: list[JSON]) -> None:
        if not blocks:
            return
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))

    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidRequest("messages must be objects", param=param)
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            system.extend(_content_blocks(content, f"{param}.content", images=False))
        elif role == "user":
            add("user", _content_blocks(content, f"{param}.content", images=True))
        elif role == "assistant":
            blocks = _content_blocks(content, f"{param}.content", images=False)
            for k, tc in enumerate(m.get("tool_calls") or []):
                blocks.append(_tool_use_block(tc, f"{param}.tool_calls[{k}]"))
            add("assistant", blocks)
        elif role == "tool":
            tid = m.get("tool_call_id")
            if not isinstance(tid, str) or not tid:
                raise InvalidRequest("tool messages need a tool_call_id",
                                     param=f"{param}.tool_call_id")
            result: JSON = {"type": "tool_result", "tool_use_id": tid}
            if isinstance(content, str):
                result["content"] = content
            else:
                result["content"] = _content_blocks(content, f"{param}.content", images=True)
            add("user", [result])
        else:
            raise InvalidRequest(f"message role {role!r} is not supported",
                                 param=f"{param}.role")

    out: list[JSON] = []
    for role, blocks in turns:
        if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:
            out.append({"role": role, "content": blocks[0]["text"]})
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _translate_tools(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list", param="tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function" or \
                not isinstance(t.get("function"), dict):
            raise InvalidRequest("only function tools are supported", param=f"tools[{i}]")
        fn = t["function"]
        if not fn.get("name"):
            raise InvalidRequest("tools need a name", param=f"tools[{i}].function.name")
        tool: JSON = {"name": fn["name"],
                      "input_schema": fn.get("parameters") or {"type": "object",
                                                               "properties": {}}}
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def _translate_tool_choice(tc: Any) -> JSON:
    if tc == "auto":
        return {"type": "auto"}
    if tc == "none":
        return {"type": "none"}
    if tc == "required":
        return {"type": "any"}
    if isinstance(tc, dict) and tc.get("type") == "function":
        name = (tc.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    raise InvalidRequest("tool_choice must be auto, none, required or a named function",
                         param="tool_choice")


_UNSUPPORTED_TRUTHY = {
    "logprobs": "logprobs are not available from this deployment",
    "top_logprobs": "logprobs are not available from this deployment",
    "logit_bias": "logit_bias is not supported by this deployment",
    "audio": "audio output is not supported by this deployment",
    "prediction": "predicted outputs are not supported by this deployment",
    "frequency_penalty": "frequency_penalty is not supported by this deployment",
    "presence_penalty": "presence_penalty is not supported by this deployment",
}


def build_payload(request: ChatRequest, deployment: Deployment, stream: bool) -> JSON:
    """The Messages API body for an OpenAI chat request (never mutates `request.body`)."""
    body = request.body
    for key, why in _UNSUPPORTED_TRUTHY.items():
        if body.get(key):
            raise InvalidRequest(why, param=key)
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("n > 1 is not supported by this deployment", param="n")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(x != "text" for x in modalities):
        raise InvalidRequest("only text output is supported by this deployment",
                             param="modalities")

    system, messages = _translate_messages(request.messages)
    max_tokens = (body.get("max_completion_tokens") or body.get("max_tokens")
                  or request.max_output_tokens or deployment.max_output_tokens
                  or DEFAULT_MAX_TOKENS)
    out: JSON = {"model": deployment.model, "max_tokens": int(max_tokens),
                 "messages": messages}

    tools = _translate_tools(body["tools"]) if body.get("tools") else []
    tool_choice = body.get("tool_choice")
    json_tool = False
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") not in (None, "text"):
        if rf["type"] == "json_schema":
            js = rf.get("json_schema") or {}
            schema = js.get("schema") if isinstance(js, dict) else None
            if not isinstance(schema, dict):
                raise InvalidRequest("response_format.json_schema.schema is required",
                                     param="response_format")
            if not tools:
                json_tool = True
                tool = {"name": JSON_TOOL, "input_schema": schema,
                        "description": "Respond with the answer as this tool's input."}
                if js.get("description"):
                    tool["description"] = str(js["description"])
                tools = [tool]
                tool_choice = None
            else:
                system.append({"type": "text", "text": (
                    "Respond only with a JSON value matching this JSON schema, without "
                    "any other text: " + orjson.dumps(schema).decode())})
        elif rf["type"] == "json_object":
            system.append({"type": "text", "text":
                           "Respond only with a single valid JSON object, without any "
                           "other text."})
        else:
            raise InvalidRequest(f"response_format type {rf['type']!r} is not supported",
                                 param="response_format")

    if system:
        if any("cache_control" in b for b in system):
            out["system"] = system
        else:
            out["system"] = "\n\n".join(b["text"] for b in system)
    if tools:
        out["tools"] = tools
        if json_tool:
            out["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
        else:
            choice = _translate_tool_choice(tool_choice) if tool_choice is not None else None
            if body.get("parallel_tool_calls") is False and (choice is None or
                                                              choice["type"] != "none"):
                choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
            if choice is not None:
                out["tool_choice"] = choice

    temperature = body.get("temperature")
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)  # OpenAI 0..2, Anthropic 0..1
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if stream:
        out["stream"] = True
    return out


# ---------------------------------------------------------------------------------------
# responses


def usage_of(u: Any) -> Usage:
    if not isinstance(u, dict):
        return Usage(estimated=True)
    inp = int(u.get("input_tokens") or 0)
    read = int(u.get("cache_read_input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    return Usage(prompt_tokens=inp + read + write, completion_tokens=int(
        u.get("output_tokens") or 0), cached_tokens=read, cache_write_tokens=write)


def finish_reason_of(stop_reason: Any) -> str:
    return STOP_REASONS.get(str(stop_reason), "stop") if stop_reason else "stop"


def translate_response(msg: JSON, deployment: Deployment, json_tool: bool) -> ChatResponse:
    texts: list[str] = []
    tool_calls: list[JSON] = []
    content = msg.get("content")
    if not isinstance(content, list):
        raise UpstreamBadResponse(f"upstream {deployment.name!r} response has no 'content'",
                                  deployment=deployment.name)
    for b in content:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            texts.append(str(b.get("text", "")))
        elif b.get("type") == "tool_use":
            args = orjson.dumps(b.get("input") or {}).decode()
            if json_tool and b.get("name") == JSON_TOOL:
                texts.append(args)
                continue
            tool_calls.append({"id": b.get("id"), "type": "function",
                               "function": {"name": b.get("name"), "arguments": args}})
    finish = finish_reason_of(msg.get("stop_reason"))
    if json_tool and finish == "tool_calls" and not tool_calls:
        finish = "stop"
    message: JSON = {"role": "assistant",
                     "content": "".join(texts) if texts or not tool_calls else None,
                     "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage = usage_of(msg.get("usage"))
    body = {
        "id": str(msg.get("id") or ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(msg.get("model") or deployment.model),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish}],
        "usage": usage.to_openai(),
    }
    return ChatResponse(body=body, usage=usage)


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
            body=orjson.dumps(payload), timeout=self.http.timeouts.total)
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
        t = self.http.timeouts
        resp = await self.http.open_stream(self.url, deployment=name,
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
