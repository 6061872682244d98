"""Tests of folding llama.cpp stream chunks back into a chat.completion."""

from __future__ import annotations

from tierline.models.assemble import assemble


def _chunk(delta: dict[str, object], finish: str | None = None, **kw: object) -> dict[str, object]:
    return {"id": "c1", "created": 5, "model": "m", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **kw}


def test_text_logprobs_and_usage() -> None:
    lp = {"token": "Hi", "logprob": -0.1}
    out = assemble([
        {**_chunk({"content": "Hi"}), "choices": [{"index": 0, "delta": {"content": "Hi"},
                                                   "logprobs": {"content": [lp]}}]},
        _chunk({"content": " there"}),
        _chunk({}, "stop"),
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ])
    assert out["object"] == "chat.completion" and out["id"] == "c1"
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hi there"}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] == {"content": [lp]}
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}


def test_tool_call_deltas_are_merged() -> None:
    out = assemble([
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"ci"}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "ty\": \"Paris\"}"}}]}),
        _chunk({}, "tool_calls"),
    ])
    msg = out["choices"][0]["message"]
    assert msg["content"] is None
    assert msg["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" not in out
