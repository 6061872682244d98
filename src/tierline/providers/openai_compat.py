"""The OpenAI chat-completions wire format, for every vendor that speaks it.

OpenAI, Together, Fireworks, Groq, Cerebras, DeepSeek, OpenRouter, Baseten, Mistral, vLLM,
SGLang, Ollama, llama.cpp server, Modal...: each is a `ProviderSpec` in the catalog (base URL,
key env var), not code. The body is passed through with only `model` replaced; streams are
forwarded chunk by chunk without re-encoding.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import ConfigError, UpstreamBadResponse
from tierline.providers.http import HttpClient, iter_sse_batches, loads_object, status_error
from tierline.types import ChatRequest, ChatResponse, StreamChunk, Usage


def resolve_api_key(spec: ProviderSpec) -> str | None:
    if spec.api_key:
        return spec.api_key
    if spec.api_key_env:
        return os.environ.get(spec.api_key_env) or None
    return None


def _stream_error(chunk: dict[str, Any]) -> str | None:
    """An error sent inside a 200 stream (OpenRouter-style), else None."""
    err = chunk.get("error")
    if err:
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code") or "error")[:300]
        return str(err)[:300]
    choices = chunk.get("choices")
    if isinstance(choices, list):
        for c in choices:
            if isinstance(c, dict) and c.get("finish_reason") == "error":
                return "finish_reason 'error'"
    return None


class OpenAICompatProvider:
    """Adapter for the OpenAI chat-completions API at `spec.base_url`."""

    def __init__(self, spec: ProviderSpec) -> None:
        if not spec.base_url:
            raise ConfigError(f"provider {spec.name!r} needs a base_url")
        self.spec = spec
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self.http = HttpClient(spec)
        headers = {"content-type": "application/json", **spec.headers}
        key = resolve_api_key(spec)
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    def _payload(self, request: ChatRequest, deployment: Deployment, stream: bool) -> bytes:
        body = dict(request.body)
        body["model"] = deployment.model
        if stream:
            body["stream"] = True
            if self.spec.send_stream_options:
                opts = body.get("stream_options")
                opts = dict(opts) if isinstance(opts, dict) else {}
                opts["include_usage"] = True  # always: tierline accounts every stream
                body["stream_options"] = opts
            else:  # the vendor rejects the field and sends usage unasked
                body.pop("stream_options", None)
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return orjson.dumps(body)

    async def complete(self, request: ChatRequest, deployment: Deployment) -> ChatResponse:
        status, headers, raw = await self.http.request(
            "POST", self.url, deployment=deployment.name, headers=self._headers,
            body=self._payload(request, deployment, stream=False),
            timeout=self.http.timeouts.of_deployment(deployment).total)
        if status >= 400:
            raise status_error(status, raw, headers, deployment.name)
        body = loads_object(raw, deployment.name, "response")
        if "choices" not in body or not isinstance(body["choices"], list):
            if "error" in body:
                raise UpstreamBadResponse(
                    f"upstream {deployment.name!r} returned an error with HTTP {status}",
                    deployment=deployment.name)
            raise UpstreamBadResponse(
                f"upstream {deployment.name!r} response has no 'choices'",
                deployment=deployment.name)
        usage = Usage.from_openai(body.get("usage"))
        if usage is None:
            usage = Usage(estimated=True)
        return ChatResponse(body=body, usage=usage)

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamChunk]:
        name = deployment.name
        t = self.http.timeouts.of_deployment(deployment)
        resp = await self.http.open_stream(
            self.url, deployment=name, headers=self._stream_headers,
            body=self._payload(request, deployment, stream=True), first_token=t.first_token)
        if resp.status >= 400:
            raise await self.http.read_error(resp, name)
        try:
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                raw = await resp.read()
                raise status_error(502, raw, resp.headers, name) if raw.startswith(b"{") \
                    and b'"error"' in raw else UpstreamBadResponse(
                        f"upstream {name!r} did not answer with an event stream",
                        deployment=name)
            done = False
            pending: Usage | None = None
            async for batch in iter_sse_batches(resp, deployment=name,
                                                first_timeout=t.first_token,
                                                idle_timeout=t.idle, total_timeout=t.total):
                last = len(batch) - 1
                for i, (_event, data) in enumerate(batch):
                    if data == b"[DONE]":
                        done = True
                        break
                    chunk = loads_object(data, name, "a stream chunk")
                    err = _stream_error(chunk)
                    if err is not None:
                        raise UpstreamBadResponse(
                            f"upstream {name!r} failed mid-stream: {err}", deployment=name)
                    usage = Usage.from_openai(chunk["usage"]) if chunk.get("usage") else None
                    if usage is not None and chunk.get("choices"):
                        # usage on a content chunk (vLLM continuous stats, some vendors on
                        # the finish chunk): forward the content, keep the latest usage
                        pending = usage
                        usage = None
                    elif usage is not None:
                        pending = None
                    # `more`: the next chunk is already here (same read) - send together
                    yield StreamChunk(data=chunk, raw=data, usage=usage,
                                      more=i < last and batch[i + 1][1] != b"[DONE]")
                if done:
                    break
            if pending is not None:
                yield StreamChunk(data={"object": "chat.completion.chunk", "choices": [],
                                        "usage": pending.to_openai()}, usage=pending)
            if not done:
                raise UpstreamBadResponse(f"upstream {name!r} stream ended without [DONE]",
                                          deployment=name)
        finally:
            resp.release()

    async def aclose(self) -> None:
        await self.http.aclose()
