"""Replicate's wire format: OpenAI chat requests as Replicate LLM inputs, and predictions
(output, metrics, status, errors) back (the HTTP side is in `replicate.py`)."""

from __future__ import annotations

import math
from typing import Any

import orjson

from tierline.catalog.model import Deployment
from tierline.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamBadResponse,
    UpstreamError,
)
from tierline.providers.http import status_error
from tierline.types import JSON, ChatRequest, Usage

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})



# ---------------------------------------------------------------------------------------
# requests

def _text(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, p in enumerate(content):
            if isinstance(p, dict) and p.get("type") == "text" and \
                    isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                kind = p.get("type") if isinstance(p, dict) else None
                raise InvalidRequest(f"content part type {kind!r} is not supported by this "
                                     "deployment", param=f"{param}[{j}].type")
        return "\n".join(parts)
    raise InvalidRequest(f"{param} must be a string or a list of content parts", param=param)


def build_input(request: ChatRequest, deployment: Deployment) -> JSON:
    body = request.body
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("n > 1 is not supported by this deployment", param="n")
    for key in ("tools", "logprobs", "top_logprobs", "logit_bias", "audio"):
        if body.get(key):
            raise InvalidRequest(f"{key} is not supported by this deployment", param=key)
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") not in (None, "text"):
        raise InvalidRequest("structured output is not supported by this deployment",
                             param="response_format")

    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(request.messages):
        role = m.get("role") if isinstance(m, dict) else None
        param = f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(_text(m.get("content"), f"{param}.content"))
        elif role in ("user", "assistant"):
            if role == "assistant" and m.get("tool_calls"):
                raise InvalidRequest("tool calls are not supported by this deployment",
                                     param=f"{param}.tool_calls")
            turns.append((role, _text(m.get("content"), f"{param}.content")))
        else:
            raise InvalidRequest(f"message role {role!r} is not supported by this "
                                 "deployment", param=f"{param}.role")
    if not turns:
        raise InvalidRequest("at least one user message is required", param="messages")
    if len(turns) == 1 and turns[0][0] == "user":
        prompt = turns[0][1]
    else:
        lines = [f"{'User' if r == 'user' else 'Assistant'}: {t}" for r, t in turns]
        if turns[-1][0] == "user":
            lines.append("Assistant:")
        prompt = "\n\n".join(lines)

    inp: JSON = {"prompt": prompt}
    if system:
        inp["system_prompt"] = "\n\n".join(system)
    max_tokens = (body.get("max_completion_tokens") or body.get("max_tokens")
                  or request.max_output_tokens or deployment.max_output_tokens)
    if max_tokens:
        inp["max_tokens"] = int(max_tokens)
        inp["max_new_tokens"] = int(max_tokens)
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed"):
        if body.get(key) is not None:
            inp[key] = body[key]
    stop = body.get("stop")
    if stop:
        stops = [stop] if isinstance(stop, str) else stop
        if any("," in s for s in stops):
            # Replicate's `stop_sequences` is one comma-separated string: "a,b" would be
            # split into two stops, and there is no escape for a comma
            raise InvalidRequest("a stop sequence containing a comma is not supported by "
                                 "this deployment (its stop sequences are one "
                                 "comma-separated string)", param="stop")
        inp["stop_sequences"] = ",".join(stops)
    return inp


# ---------------------------------------------------------------------------------------
# responses

def output_text(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, list):
        return "".join(str(x) for x in output if x is not None)
    return str(output)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def usage_of(pred: JSON, inp: JSON, completion: str) -> Usage:
    metrics = pred.get("metrics")
    if isinstance(metrics, dict):
        try:
            it = metrics.get("input_token_count")
            ot = metrics.get("output_token_count")
            if it is not None and ot is not None and int(it) >= 0 and int(ot) >= 0:
                return Usage(prompt_tokens=int(it), completion_tokens=int(ot))
        except (TypeError, ValueError, OverflowError):
            pass
    prompt = str(inp.get("system_prompt") or "") + str(inp.get("prompt") or "")
    return Usage(prompt_tokens=estimate_tokens(prompt),
                 completion_tokens=estimate_tokens(completion), estimated=True)


def finish_reason(usage: Usage, inp: JSON) -> str:
    limit = inp.get("max_tokens")
    if not usage.estimated and isinstance(limit, int) and usage.completion_tokens >= limit:
        return "length"
    return "stop"


def prediction_error(message: str, deployment: str, what: str = "prediction failed"
                     ) -> UpstreamError:
    """A failed prediction: context overflow when it says so, else a bad response."""
    msg = message.strip()[:300] or "no error message"
    err = status_error(400, orjson.dumps({"detail": msg}), {}, deployment)
    if isinstance(err, ContextLengthExceeded):
        return err
    return UpstreamBadResponse(f"upstream {deployment!r} {what}: {msg}", deployment=deployment)


def check_terminal(pred: JSON, deployment: str) -> None:
    status = pred.get("status")
    if status == "succeeded":
        return
    if status == "failed":
        raise prediction_error(str(pred.get("error") or ""), deployment)
    if status in ("canceled", "aborted"):
        raise UpstreamBadResponse(f"upstream {deployment!r} prediction was {status}",
                                  deployment=deployment)
    raise UpstreamBadResponse(f"upstream {deployment!r} prediction has unknown status "
                              f"{str(status)[:40]!r}", deployment=deployment)


def event_error(data: bytes, deployment: str) -> UpstreamError:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        msg = obj.get("detail") or obj.get("error") or obj.get("message") or ""
    else:
        msg = data.decode("utf-8", "replace")
    return prediction_error(str(msg), deployment, "failed mid-stream")


# ---------------------------------------------------------------------------------------
