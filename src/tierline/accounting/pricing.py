"""Usage -> cost, exactly. Costs are integers in picodollars (1e-12 USD): every price
with up to six decimals in USD per 1M tokens is an integer number of picodollars per token,
so sums over millions of requests are exact (no float drift between the request log, the
response headers and budgets).
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from tierline.catalog.model import Price
from tierline.types import Usage

PICO_PER_USD = 10**12


@lru_cache(maxsize=4096)
def pico_per_token(usd_per_mtok: float) -> int:
    """USD per 1M tokens -> picodollars per token (exact for <= 6 decimals)."""
    return int((Decimal(repr(usd_per_mtok)) * 1_000_000).to_integral_value())


def cost_pico(usage: Usage, price: Price) -> int:
    """The cost of one call: uncached input, cached input, cache writes, output and
    reasoning tokens, each at its own price (falling back to the input / output price)."""
    p_in = pico_per_token(price.input)
    p_cached = pico_per_token(price.cached_input) if price.cached_input is not None else p_in
    p_write = pico_per_token(price.cache_write) if price.cache_write is not None else p_in
    p_out = pico_per_token(price.output)
    p_reason = pico_per_token(price.reasoning) if price.reasoning is not None else p_out
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    write = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    plain_in = usage.prompt_tokens - cached - write
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
    plain_out = usage.completion_tokens - reasoning
    return (plain_in * p_in + cached * p_cached + write * p_write + plain_out * p_out
            + reasoning * p_reason)


def usd(pico: int) -> str:
    """Picodollars as a plain decimal USD string (no exponent), e.g. '0.00012345'."""
    if pico == 0:
        return "0"
    d = (Decimal(pico) / PICO_PER_USD).normalize()
    return format(d, "f")


def worst_case_pico(prompt_tokens: int, max_output_tokens: int, price: Price) -> int:
    """Upper bound of a call's cost before it runs (for budget reservations)."""
    p_in = max(pico_per_token(price.input),
               pico_per_token(price.cache_write) if price.cache_write is not None else 0)
    p_out = max(pico_per_token(price.output),
                pico_per_token(price.reasoning) if price.reasoning is not None else 0)
    return prompt_tokens * p_in + max_output_tokens * p_out
