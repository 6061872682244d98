"""Target specs and pricing.

A target is `NAME[?k=v&...]` served by the in-process gateway (`auto?quality=0.9` sends
`"tierline": {"quality": 0.9}`), or `URL#MODEL[?k=v]` for any OpenAI-compatible server.
Prices (`--price IN,OUT` for every target or `--price TARGET=IN,OUT`) are USD per
million tokens and are used only when the server does not report `usage.cost_usd`.
"""

from __future__ import annotations

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
    if a < 0 or b < 0:
        raise BenchError(f"--price must not be negative, got {text!r}")
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


def reported_cost(usage: dict[str, Any] | None) -> float | None:
    """`usage.cost_usd` (a decimal string) as the gateway reports it, if present."""
    if not usage or usage.get("cost_usd") is None:
        return None
    try:
        return float(Decimal(str(usage["cost_usd"])))
    except (InvalidOperation, ValueError):
        return None


def request_cost(target: Target, usage: dict[str, Any] | None) -> tuple[float, str]:
    """(USD, source) with source one of reported / price / no_usage / none."""
    rep = reported_cost(usage)
    if rep is not None:
        return rep, "reported"
    if target.price is not None:
        if not usage:
            return 0.0, "no_usage"  # e.g. an HTTP error: nothing was billed as far as we see
        return target.price.cost(int(usage.get("prompt_tokens") or 0),
                                 int(usage.get("completion_tokens") or 0)), "price"
    return 0.0, "none"
