"""Anthropic Messages <-> OpenAI chat-completions translation (pure functions, no I/O):
request bodies, responses, usage and stop reasons. The provider (`anthropic.py`) does the
HTTP and the stream; see its docstring for the mapping rules.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tierline.catalog.model import Deployment
from tierline.errors import InvalidRequest, UpstreamBadResponse
from tierline.types import JSON, ChatRequest, ChatResponse, Usage, plausible_count

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
    top_p = body.get("top_p")
    # Claude 4.x refuse temperature and top_p together; top_p 1 (what many SDKs send by
    # default) changes nothing, so it is dropped rather than risk that 400
    if top_p is not None and not (top_p >= 1 and temperature is not None):
        out["top_p"] = top_p
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
    """Anthropic's usage; malformed or negative counts -> an estimate (counted locally)."""
    if not isinstance(u, dict):
        return Usage(estimated=True)
    raw = [u.get(k) for k in ("input_tokens", "cache_read_input_tokens",
                              "cache_creation_input_tokens", "output_tokens")]
    if not all(v is None or plausible_count(v) for v in raw):
        return Usage(estimated=True)
    inp, read, write, out = (int(v or 0) for v in raw)
    return Usage(prompt_tokens=inp + read + write, completion_tokens=out, cached_tokens=read,
                 cache_write_tokens=write)


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
