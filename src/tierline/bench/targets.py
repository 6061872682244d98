"""Target specs and pricing.

A target is `NAME[?k=v&...]` served by the in-process gateway (`auto?quality=0.9` sends
`"tierline": {"quality": 0.9}`), or `URL#MODEL[?k=v]` for any OpenAI-compatible server.
Prices (`--price IN,OUT` for every target or `--price TARGET=IN,OUT`) are USD per
million tokens and are used only when the server does not report `usage.cost_usd`
(in-process targets default to their deployment's catalog price); a request that fails
after the server began answering and reports no usage is estimated like the gateway
does (its local token count of the prompt and of the output received so far).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from tierline.bench.workload import BenchError

API_KEY_ENV = "TIERLINE_BENCH_API_KEY"


@dataclass(slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok
                + completion_tokens * self.output_per_mtok) / 1e6


@dataclass(slots=True)
class Target:
    name: str  # the spec as written: the key in summary.json
    model: str
    base_url: str | None  # None: the in-process gateway (filled in when it starts)
    extension: dict[str, Any] = field(default_factory=dict)  # the body's `tierline` object
    price: Price | None = None
    api_key: str | None = None

    @property
    def in_process(self) -> bool:
        return self.base_url is None

    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request as sent: this target's model, always streamed with usage."""
        b = dict(request)
        b["model"] = self.model
        b["stream"] = True
        opts = dict(b.get("stream_options") or {})
        opts["include_usage"] = True
        b["stream_options"] = opts
        if self.extension:
            b["tierline"] = {**(b.get("tierline") or {}), **self.extension}
        return b


def _value(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def parse_target(spec: str) -> Target:
    spec = spec.strip()
    if not spec:
        raise BenchError("empty --target")
    url: str | None = None
    rest = spec
    if spec.startswith(("http://", "https://")):
        url, sep, rest = spec.partition("#")
        if not sep or not rest:
            raise BenchError(f"target {spec!r}: a URL target is URL#MODEL")
        url = url.rstrip("/")
    model, _, query = rest.partition("?")
    if not model:
        raise BenchError(f"target {spec!r}: no model name")
    ext = {k: _value(v) for k, v in parse_qsl(query, keep_blank_values=True)}
    key = os.environ.get(API_KEY_ENV) if url else None
    return Target(name=spec, model=model, base_url=url, extension=ext, api_key=key or None)


def parse_price(text: str) -> Price:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise BenchError(f"--price expects IN,OUT (USD per 1M tokens), got {text!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0:
        raise BenchError(f"--price must be finite and not negative, got {text!r}")
    return Price(a, b)


def apply_prices(targets: list[Target], specs: list[str]) -> None:
    """`IN,OUT` for every target, `TARGET=IN,OUT` for one (later wins)."""
    by_name = {t.name: t for t in targets}
    for s in specs:
        name, eq, value = s.rpartition("=")
        if not eq:
            p = parse_price(s)
            for t in targets:
                t.price = p
            continue
        if name not in by_name:
            raise BenchError(f"--price {s!r}: no target named {name!r}")
        by_name[name].price = parse_price(value)


def _usd(value: Any) -> float | None:
    """A decimal USD amount (string or number), or None when absent / not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return float(d) if d.is_finite() and d >= 0 else None


def reported_cost(usage: dict[str, Any] | None) -> float | None:
    """`usage.cost_usd` (a decimal string) as the gateway reports it, if present."""
    return _usd(usage.get("cost_usd")) if usage else None


def estimate_tokens(messages: list[dict[str, Any]], partial: str) -> tuple[int, int]:
    """(prompt, completion) tokens by the gateway's own local estimator (the one it uses
    to charge streams that end without usage): the whole prompt and the output so far."""
    from tierline.accounting.tokens import count_messages, count_text

    return count_messages(messages), count_text(partial)


def request_cost(target: Target, usage: dict[str, Any] | None, *,
                 price: Price | None = None, header: str | None = None,
                 started: bool = False,
                 messages: list[dict[str, Any]] | None = None, partial: str = ""
                 ) -> tuple[float, str]:
    """(USD, source) of one request. `price` defaults to the target's (`--price`);
    `header` is a tierline gateway's `x-tierline-cost-usd`; `started`: the server
    answered 200, i.e. it began generating (and billing).

    source: `reported` (usage.cost_usd, or a numeric cost header), `price` (reported
    token usage x price), `estimated` (a started request without usage - typically a
    stream that failed mid-way: the prompt + the output received so far, counted like the
    gateway counts them, x price), `no_usage` (no usage and never started, e.g. an HTTP
    error or a refused connection: $0) or `none` (no price known: $0)."""
    rep = reported_cost(usage)
    if rep is not None:
        return rep, "reported"
    hdr = _usd(header)  # "deferred" on a stream: the cost comes in its usage chunk
    if hdr is not None:
        return hdr, "reported"
    p = price if price is not None else target.price
    has_tokens = bool(usage) and any(int((usage or {}).get(k) or 0) > 0
                                     for k in ("prompt_tokens", "completion_tokens"))
    if p is None:
        return 0.0, "no_usage" if target.in_process else "none"
    if has_tokens:
        assert usage is not None
        return p.cost(int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0)), "price"
    if started:
        return p.cost(*estimate_tokens(messages or [], partial)), "estimated"
    return 0.0, "no_usage"
