"""Typed records of the catalog: vendors (`ProviderSpec`) and deployments (`Deployment`).

A vendor that speaks an existing wire format is a `ProviderSpec` entry, not code. A
deployment is one model at one vendor, with everything routing and accounting need.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Capability = Literal["tools", "json_schema", "vision", "streaming", "logprobs"]

#: tokens per request (prompt + output) of an embedded deployment that sets no `n_ctx`
EMBEDDED_N_CTX = 2048


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """USD per 1M tokens: finite and non-negative (an infinite price cannot be costed)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    input: float = Field(0.0, ge=0)
    cached_input: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)
    output: float = Field(0.0, ge=0)
    reasoning: float | None = Field(None, ge=0)


class ProviderSpec(_Strict):
    """A vendor: which wire format it speaks, where, and how it authenticates."""

    name: str
    wire: Literal["openai", "anthropic", "replicate", "embedded"] = "openai"
    base_url: str | None = None
    api_key: str | None = None  # a literal key (after ${ENV} interpolation)
    api_key_env: str | None = None  # or the env var holding it
    requires_key: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    region: str | None = None  # default region of its deployments
    zero_data_retention: bool = False
    trains_on_inputs: bool = False
    max_connections: int = Field(256, ge=1)
    transport: Literal["auto", "aiohttp"] = "auto"  # auto: httptools client unless proxied
    # openai wire: ask for stream usage with `stream_options.include_usage`. False for vendors
    # that reject the field (and report usage in a stream's last chunk anyway): it is dropped.
    send_stream_options: bool = True
    # replicate wire: hosts the API token may follow a prediction's `urls.stream` to, besides
    # base_url's origin (None: `*.replicate.com` over https)
    follow_hosts: list[str] | None = None

    @field_validator("follow_hosts", mode="before")
    @classmethod
    def _one_host(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v  # `follow_hosts: stream.example.com`
    # seconds
    connect_timeout: float = Field(10.0, gt=0)
    first_token_timeout: float = Field(60.0, gt=0)
    idle_timeout: float = Field(60.0, gt=0)
    total_timeout: float = Field(600.0, gt=0)


class Deployment(_Strict):
    """One model served by one provider."""

    name: str  # what clients ask for, e.g. "groq/llama-3.3-70b"
    provider: str
    model: str  # the upstream model id
    price: Price = Price()
    context_window: int = Field(8192, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    capabilities: frozenset[Capability] = frozenset({"streaming"})
    region: str | None = None
    zero_data_retention: bool | None = None
    trains_on_inputs: bool | None = None
    open_weight: bool = False
    tier: str | None = None
    profile: str | None = None  # the learned router's model profile for this deployment
    weight: float = Field(1.0, ge=0, allow_inf_nan=False)  # for the `weighted` strategy
    last_resort: bool | None = None  # only after every other candidate (default: embedded)
    # per-deployment overrides of the provider's timeouts (seconds)
    first_token_timeout: float | None = Field(None, gt=0)
    idle_timeout: float | None = Field(None, gt=0)
    total_timeout: float | None = Field(None, gt=0)
    # embedded models only
    path: str | None = None
    # tokens per request (prompt + output); each of the `parallel` slots gets this many
    n_ctx: int | None = Field(None, gt=0)
    threads: int | None = Field(None, gt=0)
    parallel: int = Field(1, ge=1)
    queue_size: int = Field(64, ge=1)

    def as_embedded(self) -> Deployment:
        """This deployment as an embedded provider serves it: `n_ctx` set (default
        EMBEDDED_N_CTX) and `context_window` the window one request really gets, min(the
        model's `context_window`, `n_ctx`) - or `n_ctx` when no context_window was given.
        Routing, budgets' worst cases and `/v1/models` all read `context_window`."""
        if self.n_ctx is None and "context_window" in self.model_fields_set:
            n_ctx = min(self.context_window, EMBEDDED_N_CTX)
        else:
            n_ctx = self.n_ctx or EMBEDDED_N_CTX
        explicit = "context_window" in self.model_fields_set
        window = min(self.context_window, n_ctx) if explicit else n_ctx
        if (n_ctx, window) == (self.n_ctx, self.context_window):
            return self
        return self.model_copy(update={"n_ctx": n_ctx, "context_window": window})
