"""A bench-friendly OpenAI mock: `tests.mocks.openai_server.MockOpenAI` whose script is
chosen from the request's last user message (so concurrent requests get the right
answer), with a fixed latency / per-chunk delay and usage for every answer.

    mock = BenchMock({"capital of France": {"text": "Paris"}, "boom": {"status": 500}},
                     latency=0.1, delay=0.02)
"""

from __future__ import annotations

from typing import Any

from tests.mocks.openai_server import MockOpenAI, OpenAIScript


class BenchMock(MockOpenAI):
    def __init__(self, answers: dict[str, dict[str, Any]] | None = None,
                 **defaults: Any) -> None:
        super().__init__()
        self.answers = answers or {}
        self.defaults = {"text": "I do not know.", "chunks": 3, "prompt_tokens": 10,
                         "completion_tokens": 5, **defaults}

    def next_script(self) -> OpenAIScript:
        # the record middleware appended this request just before the handler ran (no
        # await in between), so requests[-1] is the request being answered
        body = self.requests[-1].json if self.requests else None
        prompt = ""
        if isinstance(body, dict):
            msgs = body.get("messages") or []
            if msgs:
                prompt = str(msgs[-1].get("content", ""))
        for key, kw in self.answers.items():
            if key in prompt:
                return OpenAIScript(**{**self.defaults, **kw})
        return OpenAIScript(**self.defaults)
