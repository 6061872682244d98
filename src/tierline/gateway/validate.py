"""Validation of a chat-completions body: every client mistake becomes an InvalidRequest
that names the field (`param`), before anything is routed or sent upstream.

Hand-written checks instead of a pydantic round trip of the whole body: the body is passed
through as parsed, and this costs microseconds on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tierline.errors import InvalidRequest
from tierline.routing.controls import (
    check_one_knob,
    coerce_control,
    parse_control_value,
    with_defaults,
)
from tierline.types import JSON, ChatRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# Standard OpenAI chat-completions parameters, passed through to targets that support them.
STANDARD = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "n", "stop", "seed", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "logprobs", "top_logprobs", "user", "presence_penalty",
    "frequency_penalty", "logit_bias", "metadata", "store", "reasoning_effort", "modalities",
    "prediction", "service_tier", "functions", "function_call", "verbosity",
    "web_search_options", "audio", "prompt_cache_key", "safety_identifier",
})
# Widely supported extensions of OpenAI-compatible servers (vLLM, Together, Fireworks...).
EXTENSIONS = frozenset({"top_k", "min_p", "repetition_penalty", "chat_template_kwargs"})

HEADER_PREFIX = "x-tierline-"


def _bad(message: str, param: str | None, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int_field(body: JSON, name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(f"'{name}' must be an integer, got {type(v).__name__}", name, "invalid_type")
    if v < lo or v > hi:
        raise _bad(f"'{name}' must be between {lo} and {hi}, got {v}", name)
    return v


def _num_field(body: JSON, name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if not _is_num(v):
        raise _bad(f"'{name}' must be a number, got {type(v).__name__}", name, "invalid_type")
    if not lo <= v <= hi:
        raise _bad(f"'{name}' must be between {lo:g} and {hi:g}, got {v}", name)


def _check_messages(msgs: Any) -> None:
    if msgs is None:
        raise _bad("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(msgs, list):
        raise _bad("'messages' must be an array", "messages", "invalid_type")
    if not msgs:
        raise _bad("'messages' must contain at least one message", "messages")
    for i, m in enumerate(msgs):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"'{p}' must be an object", p, "invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise _bad(f"'{p}.role' must be one of {sorted(ROLES)}, got {role!r}", f"{p}.role")
        _check_tool_calls(m.get("tool_calls"), p)
        tid = m.get("tool_call_id")
        if tid is not None and not isinstance(tid, str):
            raise _bad(f"'{p}.tool_call_id' must be a string", f"{p}.tool_call_id",
                       "invalid_type")
        c = m.get("content")
        if c is None:
            if role == "assistant":
                continue
            raise _bad(f"'{p}.content' is required", f"{p}.content",
                       "missing_required_parameter")
        if isinstance(c, list):
            for j, part in enumerate(c):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _bad(f"'{p}.content[{j}]' must be an object with a 'type'",
                               f"{p}.content[{j}]", "invalid_type")
        elif not isinstance(c, str):
            raise _bad(f"'{p}.content' must be a string or an array of parts",
                       f"{p}.content", "invalid_type")


def _check_tool_calls(tcs: Any, p: str) -> None:
    """An assistant message's ``tool_calls``: an array of function calls, as OpenAI sends."""
    if tcs is None:
        return
    if not isinstance(tcs, list):
        raise _bad(f"'{p}.tool_calls' must be an array", f"{p}.tool_calls", "invalid_type")
    for k, tc in enumerate(tcs):
        q = f"{p}.tool_calls[{k}]"
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"'{q}' must be {{'id': ..., 'type': 'function', 'function': "
                       "{'name': ..., 'arguments': ...}}", q, "invalid_type")
        if fn.get("arguments") is not None and not isinstance(fn["arguments"], str):
            raise _bad(f"'{q}.function.arguments' must be a string (JSON-encoded)",
                       f"{q}.function.arguments", "invalid_type")
        if tc.get("id") is not None and not isinstance(tc["id"], str):
            raise _bad(f"'{q}.id' must be a string", f"{q}.id", "invalid_type")


def _check_tool_choice(tc: Any) -> None:
    if tc is None:
        return
    if isinstance(tc, str):
        if tc not in ("none", "auto", "required"):
            raise _bad(f"'tool_choice' must be 'none', 'auto', 'required' or an object, got "
                       f"{tc!r}", "tool_choice")
        return
    if not isinstance(tc, dict) or not isinstance(tc.get("type"), str):
        raise _bad("'tool_choice' must be a string or an object with a 'type'", "tool_choice",
                   "invalid_type")
    if tc["type"] == "function":
        fn = tc.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad("'tool_choice.function' must be an object with a 'name'",
                       "tool_choice.function", "invalid_type")


def _check_response_format(rf: Any) -> None:
    if rf is None:
        return
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad("'response_format.type' must be 'text', 'json_object' or 'json_schema'",
                   "response_format.type")
    if rf["type"] != "json_schema":
        return
    js = rf.get("json_schema")
    if not isinstance(js, dict):
        raise _bad("'response_format.json_schema' must be an object with a 'name' and a "
                   "'schema'", "response_format.json_schema", "invalid_type")
    if not isinstance(js.get("schema", {}), dict):
        raise _bad("'response_format.json_schema.schema' must be an object",
                   "response_format.json_schema.schema", "invalid_type")


def _check_optional(body: JSON, max_tokens_limit: int) -> int | None:
    mt = _int_field(body, "max_tokens", 1, max_tokens_limit)
    mct = _int_field(body, "max_completion_tokens", 1, max_tokens_limit)
    _num_field(body, "temperature", 0, 2)
    _num_field(body, "top_p", 0, 1)
    _num_field(body, "presence_penalty", -2, 2)
    _num_field(body, "frequency_penalty", -2, 2)
    _int_field(body, "n", 1, 128)
    _int_field(body, "top_logprobs", 0, 20)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _bad("'seed' must be an integer", "seed", "invalid_type")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("'stop' must be a string or an array of strings", "stop", "invalid_type")
    for name in ("logprobs", "parallel_tool_calls", "store"):
        v = body.get(name)
        if v is not None and not isinstance(v, bool):
            raise _bad(f"'{name}' must be a boolean", name, "invalid_type")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("'tools' must be an array", "tools", "invalid_type")
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not isinstance(t.get("function"), dict) or \
                    not isinstance(t["function"].get("name"), str):
                raise _bad(f"'tools[{i}]' must be {{'type': 'function', 'function': "
                           "{'name': ...}}", f"tools[{i}]")
    _check_tool_choice(body.get("tool_choice"))
    _check_response_format(body.get("response_format"))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("'user' must be a string", "user", "invalid_type")
    return mct if mct is not None else mt


def parse_controls(ext: Any, headers: Mapping[str, str]) -> JSON:
    """Merge the body's `tierline` object with `x-tierline-*` headers: the body wins, with
    the same rule as over a key's defaults (a body that names a knob or a ranking replaces
    the headers' one)."""
    from_headers: JSON = {}
    for h, raw in headers.items():
        if h.startswith(HEADER_PREFIX) and h not in ("x-tierline-key",):
            key = h[len(HEADER_PREFIX):].replace("-", "_")
            from_headers[key] = coerce_control(key, parse_control_value(key, raw), h)
    check_one_knob(from_headers, HEADER_PREFIX)
    if ext is None:
        return from_headers
    if not isinstance(ext, dict):
        raise _bad("'tierline' must be an object", "tierline", "invalid_type")
    controls = {str(k): coerce_control(str(k), v, f"tierline.{k}") for k, v in ext.items()}
    check_one_knob(controls, "tierline.")
    return with_defaults(controls, from_headers)


def parse_chat_request(raw: bytes, headers: Mapping[str, str], *, max_tokens_limit: int,
                       request_id: str = "") -> ChatRequest:
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark: valid UTF-8, not JSON
        raw = raw[3:]
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        msg = str(e)
        if "utf-8" in msg.lower() or "surrogate" in msg.lower():
            raise _bad("the request body is not valid UTF-8", None, "invalid_encoding") from None
        raise _bad(f"the request body is not valid JSON: {msg.split(':')[0]}", None,
                   "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", None, "invalid_type")
    model = body.get("model")
    if model is None:
        raise _bad("'model' is required", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model", "invalid_type")
    _check_messages(body.get("messages"))
    ext = body.pop("tierline", None)
    for k in body:
        if k not in STANDARD and k not in EXTENSIONS:
            raise _bad(f"unrecognized request argument supplied: {k!r}", k, "unknown_parameter")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream", "invalid_type")
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not isinstance(so, dict):
            raise _bad("'stream_options' must be an object", "stream_options", "invalid_type")
        iu = so.get("include_usage", False)
        if not isinstance(iu, bool):
            raise _bad("'stream_options.include_usage' must be a boolean",
                       "stream_options.include_usage", "invalid_type")
        include_usage = iu
    max_out = _check_optional(body, max_tokens_limit)
    controls = parse_controls(ext, headers)
    return ChatRequest(body=body, model=model, stream=stream, include_usage=include_usage,
                       max_output_tokens=max_out, request_id=request_id, controls=controls)
