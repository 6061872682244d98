"""Hard constraints: each filter says why a deployment cannot serve a request, or None.

Constraints come from the config, the API key and the request (`tierline` controls); a
filter never ranks, it only removes, and its reason ends up in the 503 message and the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tierline.accounting.pricing import PICO_PER_USD, worst_case_pico
from tierline.catalog.model import Deployment, ProviderSpec
from tierline.types import JSON


@dataclass(slots=True)
class Constraints:
    region: str | None = None
    zdr: bool = False
    no_training: bool = False
    open_weight: bool = False
    max_cost_usd: float | None = None
    allow_providers: frozenset[str] | None = None
    deny_providers: frozenset[str] = frozenset()
    allow_models: frozenset[str] | None = None  # deployment names / tier:X / groups, resolved
    needs: frozenset[str] = frozenset()  # capabilities
    prompt_tokens: int = 0
    max_output_tokens: int | None = None  # per choice
    choices: int = 1  # `n`: each choice is billed its own output tokens
    unhealthy: frozenset[str] = frozenset()
    extra: list[str] = field(default_factory=list)


def required_capabilities(body: JSON) -> frozenset[str]:
    needs: set[str] = set()
    if body.get("stream") is True:
        needs.add("streaming")
    if body.get("tools") or body.get("functions"):
        needs.add("tools")
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        needs.add("json_schema")
    if body.get("logprobs"):
        needs.add("logprobs")
    for m in body.get("messages") or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list) and any(isinstance(p, dict) and p.get("type") == "image_url"
                                       for p in c):
            needs.add("vision")
            break
    return frozenset(needs)


def region_of(dep: Deployment, spec: ProviderSpec) -> str | None:
    return dep.region or spec.region


def window_of(dep: Deployment) -> int:
    return min(dep.context_window, dep.n_ctx) if dep.n_ctx else dep.context_window


def reject_reason(dep: Deployment, spec: ProviderSpec, c: Constraints) -> str | None:
    """Why `dep` cannot serve under `c` (the first failing constraint), or None."""
    if dep.name in c.unhealthy:
        return "unhealthy (circuit open, cooling down)"
    if c.allow_providers is not None and dep.provider not in c.allow_providers:
        return f"provider {dep.provider!r} not in the allowed providers"
    if dep.provider in c.deny_providers:
        return f"provider {dep.provider!r} is denied"
    if c.allow_models is not None and dep.name not in c.allow_models:
        return "not allowed for this API key"
    if c.region is not None:
        r = region_of(dep, spec)
        # an embedded model runs in this process: data never leaves the machine
        if r != "local" and (r or "").lower() != c.region.lower():
            return f"region {r or 'unknown'!r} is not {c.region!r}"
    if c.zdr:
        zdr = dep.zero_data_retention if dep.zero_data_retention is not None \
            else spec.zero_data_retention
        if not zdr:
            return "no zero-data-retention guarantee"
    if c.no_training:
        trains = dep.trains_on_inputs if dep.trains_on_inputs is not None \
            else spec.trains_on_inputs
        if trains:
            return "may train on inputs"
    if c.open_weight and not dep.open_weight:
        return "not an open-weight model"
    missing = c.needs - dep.capabilities
    if missing:
        return f"lacks capability {', '.join(sorted(missing))}"
    window = window_of(dep)
    need = c.prompt_tokens + (c.max_output_tokens or 0)
    if need > window:
        return f"context window {window} < {need} tokens (prompt + max output)"
    if c.max_cost_usd is not None:
        out = c.max_output_tokens or dep.max_output_tokens or 1024
        worst = worst_case_pico(c.prompt_tokens, out * c.choices, dep.price)
        if worst > c.max_cost_usd * PICO_PER_USD:
            return (f"worst-case cost ${worst / PICO_PER_USD:.6f} > max_cost_usd "
                    f"${c.max_cost_usd:g}")
    return None
