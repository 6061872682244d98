"""Assemble an OpenAI `chat.completion` body from an embedded model's stream chunks.

The embedded provider runs even non-streaming calls as llama.cpp streams, so that a
cancelled call (client gone, hedge lost, timeout) stops generating at the next token;
this folds the chunks back into the complete response, with llama.cpp's exact usage.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def _merge_tool_call(tools: dict[int, JSON], tc: Any) -> None:
    if not isinstance(tc, dict):
        return
    idx = tc.get("index", len(tools))
    cur = tools.setdefault(idx if isinstance(idx, int) else len(tools),
                           {"id": None, "type": "function",
                            "function": {"name": "", "arguments": ""}})
    if tc.get("id"):
        cur["id"] = tc["id"]
    if tc.get("type"):
        cur["type"] = tc["type"]
    fn = tc.get("function")
    if isinstance(fn, dict):
        for key in ("name", "arguments"):
            if isinstance(fn.get(key), str):
                cur["function"][key] += fn[key]


def assemble(chunks: list[JSON]) -> JSON:
    """One `chat.completion` (a single choice) from `chat.completion.chunk`s, in order.

    Chunks must not contain an `error` (the caller checks); `usage` is the final usage
    chunk's, or absent when none came.
    """
    text: list[str] = []
    reasoning: list[str] = []
    tools: dict[int, JSON] = {}
    logprobs: list[Any] = []
    finish: Any = None
    usage: Any = None
    head: JSON = chunks[0] if chunks else {}
    for c in chunks:
        if c.get("usage"):
            usage = c["usage"]
        for ch in c.get("choices") or ():
            if not isinstance(ch, dict):
                continue
            d = ch.get("delta") or {}
            if isinstance(d.get("content"), str):
                text.append(d["content"])
            if isinstance(d.get("reasoning_content"), str):
                reasoning.append(d["reasoning_content"])
            for tc in d.get("tool_calls") or ():
                _merge_tool_call(tools, tc)
            lp = ch.get("logprobs")
            if isinstance(lp, dict) and isinstance(lp.get("content"), list):
                logprobs.extend(lp["content"])
            if ch.get("finish_reason"):
                finish = ch["finish_reason"]
    message: JSON = {"role": "assistant",
                     "content": "".join(text) if text or not tools else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tools:
        message["tool_calls"] = [tools[k] for k in sorted(tools)]
    choice: JSON = {"index": 0, "message": message, "finish_reason": finish,
                    "logprobs": {"content": logprobs} if logprobs else None}
    out: JSON = {"id": head.get("id", ""), "object": "chat.completion",
                 "created": head.get("created", 0), "model": head.get("model", ""),
                 "choices": [choice]}
    if head.get("system_fingerprint"):
        out["system_fingerprint"] = head["system_fingerprint"]
    if usage is not None:
        out["usage"] = usage
    return out
