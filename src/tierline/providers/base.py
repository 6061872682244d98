"""The Provider protocol: the only thing the gateway knows about a vendor.

A provider instance is built once per configured vendor (`ProviderSpec`) and owns its
connection pool. `complete` / `stream` get the request and the deployment to call; they
raise `tierline.errors.UpstreamError` subclasses on failure and never leak API keys.
Streams always end with a usage chunk (`StreamChunk.usage` set) when the upstream gives
usage; if it gives none, the gateway estimates it.

Composite behaviour (retries, fallback, hedging) wraps providers; it is not in them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from tierline.catalog.model import Deployment, ProviderSpec
from tierline.types import ChatRequest, ChatResponse, StreamChunk


@runtime_checkable
class Provider(Protocol):
    spec: ProviderSpec

    async def complete(self, request: ChatRequest, deployment: Deployment) -> ChatResponse: ...

    def stream(self, request: ChatRequest, deployment: Deployment) -> AsyncIterator[StreamChunk]:
        """An async iterator of chunks; closing it early cancels the upstream call."""
        ...

    async def aclose(self) -> None: ...


class ProviderFactory(Protocol):
    """What a `tierline.providers` entry point resolves to (usually the class itself)."""

    def __call__(self, spec: ProviderSpec) -> Provider: ...
