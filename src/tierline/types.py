"""The request / response types that flow through tierline.

The OpenAI chat-completions body is kept as the parsed dict it arrived as (`body`): the
gateway validates what it needs to route and account, then passes every other standard
parameter through untouched. Adapters for other wire formats translate from / to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(slots=True)
class Usage:
    """Token usage of one call, as reported by the provider (or estimated locally).

    `prompt_tokens` includes `cached_tokens` and `cache_write_tokens` (OpenAI's convention);
    `completion_tokens` includes `reasoning_tokens`.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> JSON:
        out: JSON = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens or self.cache_write_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out

    @classmethod
    def from_openai(cls, u: Any) -> Usage | None:
        """Parse an OpenAI `usage` object; None when absent or malformed - counts that are not
        integers in [0, 10^9] (strings, floats, negatives, 1e19) are not trusted: the gateway
        then counts for itself."""
        if not isinstance(u, dict):
            return None
        ptd = u.get("prompt_tokens_details") or {}
        ctd = u.get("completion_tokens_details") or {}
        counts = (u.get("prompt_tokens"), u.get("completion_tokens"),
                  ptd.get("cached_tokens") if isinstance(ptd, dict) else None,
                  ctd.get("reasoning_tokens") if isinstance(ctd, dict) else None)
        for v in counts:
            if v is not None and not (type(v) is int and 0 <= v <= MAX_COUNT):
                return None
        pt, ct, cached, reasoning = (int(v or 0) for v in counts)
        return cls(prompt_tokens=pt, completion_tokens=ct, cached_tokens=cached,
                   reasoning_tokens=reasoning)


#: no request has a billion tokens: a larger count is garbage (and would overflow SQLite)
MAX_COUNT = 10**9


def plausible_count(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_COUNT


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request.

    `body` is the OpenAI request body without tierline's `tierline` extension object;
    `model` is the name the client asked for (a deployment, a tier, a list or `auto`).
    Adapters must not mutate `body`: copy before changing (fallbacks reuse it).
    """

    body: JSON
    model: str
    stream: bool = False
    include_usage: bool = False
    max_output_tokens: int | None = None
    request_id: str = ""
    key_id: str | None = None
    controls: JSON = field(default_factory=dict)

    @property
    def messages(self) -> list[JSON]:
        msgs = self.body.get("messages")
        return msgs if isinstance(msgs, list) else []

    def prompt_text(self) -> str:
        """All message text, concatenated (for routing features and local token counts)."""
        return messages_text(self.messages)

    def routing_text(self) -> str:
        """The users' turns only: what the learned router featurises (as in training)."""
        return messages_text(self.messages, roles=("user",))


def messages_text(messages: list[JSON], roles: tuple[str, ...] | None = None) -> str:
    """Text of ``messages`` (string contents and text parts), newline-joined; with ``roles``,
    only messages of those roles (a message without a role counts as ``user``)."""
    parts: list[str] = []
    for m in messages:
        if roles is not None and m.get("role", "user") not in roles:
            continue
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    parts.append(p["text"])
    return "\n".join(parts)


@dataclass(slots=True)
class ChatResponse:
    """A complete (non-streaming) answer: an OpenAI `chat.completion` body plus its usage."""

    body: JSON
    usage: Usage


@dataclass(slots=True)
class StreamChunk:
    """One OpenAI `chat.completion.chunk`.

    `raw` is the chunk's JSON encoding when the adapter received it already in OpenAI's
    format, so the gateway can forward it without re-encoding. A chunk whose `usage` is set
    is the final usage chunk (`choices` empty); adapters always emit one. `more` says the
    next chunk is already at hand (same network read), so the gateway may batch the write.
    """

    data: JSON
    raw: bytes | None = None
    usage: Usage | None = None
    more: bool = False
