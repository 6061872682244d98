"""Adapter for Replicate's HTTP predictions API, for language models.

- `deployment.model` is "owner/name" (official models: `POST /models/{owner}/{name}/predictions`)
  or "owner/name:version" (`POST /predictions` with `{"version": ...}`).
- Input follows the schema of Replicate's LLMs (e.g. meta/meta-llama-3-70b-instruct):
  `prompt`, `system_prompt` (system / developer messages), `max_tokens` and, for older
  models, `max_new_tokens` (both sent; Replicate drops inputs a model does not declare),
  `temperature`, `top_p`, `presence_penalty`, `frequency_penalty`, `seed`, `stop_sequences`
  (a comma-separated string, so a stop sequence containing a comma is refused with
  `InvalidRequest(param="stop")`). A single user turn is sent as the prompt; a multi-turn
  conversation is rendered as a "User: / Assistant:" transcript ending with "Assistant:"
  (the model's own prompt_template still wraps it). Tools, images, n > 1, logprobs and
  JSON response formats cannot be expressed and raise `InvalidRequest(param=...)`.
- `complete` creates the prediction with `Prefer: wait` and, when the prediction is not done
  by the time the server answers, polls `urls.get` until it reaches a terminal status
  (cancelling it on timeout). Output pieces are joined.
- `stream` creates it with `"stream": true` and reads `urls.stream` (SSE events `output`,
  `error`, `done`), then fetches the prediction for `metrics`; usage comes from
  `metrics.input_token_count` / `output_token_count`, or is estimated locally (chars / 4,
  `estimated=True`). Closing a stream early cancels the prediction.
- URLs in a prediction are followed only where the API token may go: `urls.get` /
  `urls.cancel` only on base_url's origin (scheme, host, port), else they are built from the
  prediction id under base_url; `urls.stream` on base_url's origin or a `follow_hosts` entry
  (default `*.replicate.com` over https: Replicate serves streams from
  stream.replicate.com), else the stream is not opened and the prediction is polled instead,
  its output forwarded as it grows (a warning is logged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote

import orjson

from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import (
    ConfigError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
)
from tierline.providers.http import (
    HttpClient,
    UpstreamResponse,
    iter_sse,
    loads_object,
    status_error,
)
from tierline.providers.openai_compat import resolve_api_key
from tierline.providers.origins import (
    DEFAULT_FOLLOW_HOSTS,
    host_matches,
    origin_text,
    parse_follow_hosts,
    url_origin,
)
from tierline.providers.replicate_wire import (
    TERMINAL,
    build_input,
    check_terminal,
    event_error,
    finish_reason,
    output_text,
    prediction_error,
    usage_of,
)
from tierline.types import JSON, ChatRequest, ChatResponse, StreamChunk, Usage

DEFAULT_BASE_URL = "https://api.replicate.com/v1"

log = logging.getLogger("tierline.providers.replicate")



class ReplicateProvider:
    """Provider for `wire: replicate` specs."""

    poll_interval = 0.5  # seconds between polls of a prediction that is not done yet

    def __init__(self, spec: ProviderSpec, follow_hosts: Iterable[str] | None = None) -> None:
        self.spec = spec
        self.base = (spec.base_url or DEFAULT_BASE_URL).rstrip("/")
        origin = url_origin(self.base)
        if origin is None:
            raise ConfigError(f"provider {spec.name!r}: base_url {self.base!r} is not an "
                              "absolute http(s) URL")
        self.origin = origin
        if follow_hosts is None:  # the provider's `follow_hosts` setting
            follow_hosts = spec.follow_hosts
        self.follow_hosts = parse_follow_hosts(
            DEFAULT_FOLLOW_HOSTS if follow_hosts is None else follow_hosts)
        self._warned: set[tuple[str, str]] = set()
        self.http = HttpClient(spec)
        headers = {"content-type": "application/json"}
        key = resolve_api_key(spec)
        if key:
            headers["authorization"] = f"Bearer {key}"
        headers.update(spec.headers)
        self._headers = headers

    def _create_request(self, request: ChatRequest, deployment: Deployment, stream: bool
                        ) -> tuple[str, JSON]:
        model = deployment.model
        inp = build_input(request, deployment)
        body: JSON = {"input": inp}
        if ":" in model:
            body["version"] = model.split(":", 1)[1]
            url = f"{self.base}/predictions"
        else:
            url = f"{self.base}/models/{model}/predictions"
        if stream:
            body["stream"] = True
        return url, body

    async def _create(self, url: str, body: JSON, deployment: Deployment, wait: bool) -> JSON:
        headers = {**self._headers, "prefer": "wait"} if wait else self._headers
        status, hdrs, raw = await self.http.request(
            "POST", url, deployment=deployment.name, headers=headers,
            body=orjson.dumps(body), timeout=self.http.timeouts.total)
        if status >= 400:
            raise status_error(status, raw, hdrs, deployment.name)
        return self._prediction(raw, deployment.name)

    def _prediction(self, raw: bytes, name: str) -> JSON:
        pred = loads_object(raw, name, "prediction")
        if not isinstance(pred.get("status"), str):
            raise UpstreamBadResponse(f"upstream {name!r} prediction has no status",
                                      deployment=name)
        return pred

    @staticmethod
    def _url(pred: JSON, key: str) -> Any:
        urls = pred.get("urls")
        return urls.get(key) if isinstance(urls, dict) else None

    def may_stream_from(self, url: Any) -> bool:
        """May the API token go to this `urls.stream`? base_url's origin or `follow_hosts`."""
        o = url_origin(url)
        return o is not None and (o == self.origin or
                                  any(host_matches(o, r) for r in self.follow_hosts))

    def _api_url(self, pred: JSON, key: str, deployment: str) -> str | None:
        """`urls.get` / `urls.cancel` when on base_url's origin; else the same endpoint built
        from the prediction id under base_url (None without an id)."""
        url = self._url(pred, key)
        if url and url_origin(url) == self.origin:
            return str(url)
        pid = pred.get("id")
        if not isinstance(pid, str) or not pid:
            return None
        if url:
            where = origin_text(url_origin(url))
            if (key, where) not in self._warned:  # once per provider and origin: polls repeat
                if len(self._warned) < 256:
                    self._warned.add((key, where))
                log.warning("upstream %r: prediction urls.%s points at %s, not at base_url's "
                            "origin %s; using %s/predictions/<id> instead (the API token is "
                            "only sent to base_url's origin)", deployment, key, where,
                            origin_text(self.origin), self.base)
        url = f"{self.base}/predictions/{quote(pid, safe='')}"
        return url + "/cancel" if key == "cancel" else url

    async def _get(self, pred: JSON, deployment: str, timeout: float | None = None) -> JSON:
        url = self._api_url(pred, "get", deployment)
        if url is None:
            raise UpstreamBadResponse(f"upstream {deployment!r} prediction has no id",
                                      deployment=deployment)
        status, hdrs, raw = await self.http.request("GET", url, deployment=deployment,
                                                    headers=self._headers, timeout=timeout)
        if status >= 400:
            raise status_error(status, raw, hdrs, deployment)
        return self._prediction(raw, deployment)

    async def _cancel(self, pred: JSON, deployment: str) -> None:
        """Best effort: a prediction nobody reads any more should stop costing money."""
        url = self._api_url(pred, "cancel", deployment)
        if not url:
            return
        try:
            await self.http.request("POST", url, deployment=deployment,
                                    headers=self._headers, timeout=5.0)
        except UpstreamError:
            pass

    async def _wait(self, pred: JSON, deployment: str, deadline: float) -> JSON:
        loop = asyncio.get_running_loop()
        while pred.get("status") not in TERMINAL:
            if loop.time() >= deadline:
                await self._cancel(pred, deployment)
                raise UpstreamTimeout(f"upstream {deployment!r} prediction did not finish "
                                      f"within {self.http.timeouts.total:g}s",
                                      deployment=deployment)
            await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - loop.time())))
            pred = await self._get(pred, deployment)
        return pred

    def _body(self, pred: JSON, deployment: Deployment, text: str, finish: str,
              usage: Usage) -> JSON:
        return {
            "id": str(pred.get("id") or ""),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage.to_openai(),
        }

    async def complete(self, request: ChatRequest, deployment: Deployment) -> ChatResponse:
        name = deployment.name
        url, body = self._create_request(request, deployment, stream=False)
        deadline = asyncio.get_running_loop().time() + self.http.timeouts.total
        pred = await self._create(url, body, deployment, wait=True)
        pred = await self._wait(pred, name, deadline)
        check_terminal(pred, name)
        text = output_text(pred.get("output"))
        usage = usage_of(pred, body["input"], text)
        return ChatResponse(body=self._body(pred, deployment, text,
                                            finish_reason(usage, body["input"]), usage),
                            usage=usage)

    async def _sse_output(self, url: str, name: str) -> AsyncGenerator[str, None]:
        """The `output` texts of the prediction's event stream, up to its `done` event; ""
        first, once the stream is open."""
        t = self.http.timeouts
        headers = {**self._headers, "accept": "text/event-stream", "cache-control": "no-store"}
        headers.pop("content-type", None)
        resp: UpstreamResponse = await self.http.open_stream(
            url, deployment=name, headers=headers, body=None, method="GET",
            first_token=t.first_token)
        try:
            if resp.status >= 400:
                raise await self.http.read_error(resp, name)
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                raise UpstreamBadResponse(f"upstream {name!r} did not answer with an event "
                                          "stream", deployment=name)
            yield ""  # the stream is open: the role chunk may go out
            async for event, data in iter_sse(resp, deployment=name,
                                              first_timeout=t.first_token,
                                              idle_timeout=t.idle, total_timeout=t.total):
                if event == "output":
                    text = data.decode("utf-8", "replace")
                    if text:
                        yield text
                elif event == "error":
                    raise event_error(data, name)
                elif event == "done":
                    try:
                        info = orjson.loads(data) if data.strip() else {}
                    except orjson.JSONDecodeError:
                        info = {}
                    reason = info.get("reason") if isinstance(info, dict) else None
                    if reason in ("canceled", "aborted"):
                        raise UpstreamBadResponse(f"upstream {name!r} prediction was "
                                                  f"{reason}", deployment=name)
                    if reason == "error":
                        raise prediction_error("", name)
                    return
                # "logs" and unnamed events carry nothing for the client
            raise UpstreamBadResponse(f"upstream {name!r} stream ended without a done "
                                      "event", deployment=name)
        finally:
            resp.release()

    async def _polled_output(self, pred: JSON, name: str, final: list[JSON]
                             ) -> AsyncGenerator[str, None]:
        """The output of a prediction polled until done, as it grows (when the stream URL
        may not be followed). The last prediction read is left in `final[0]`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http.timeouts.total
        sent = ""
        while True:
            status = pred.get("status")
            if status in TERMINAL:
                check_terminal(pred, name)
            text = output_text(pred.get("output"))
            if len(text) > len(sent) and text.startswith(sent):
                yield text[len(sent):]
                sent = text
            if status in TERMINAL:
                final[0] = pred
                return
            if loop.time() >= deadline:
                raise UpstreamTimeout(f"upstream {name!r} prediction did not finish within "
                                      f"{self.http.timeouts.total:g}s", deployment=name)
            await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - loop.time())))
            pred = await self._get(pred, name)

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamChunk]:
        name = deployment.name
        t = self.http.timeouts
        url, body = self._create_request(request, deployment, stream=True)
        pred = await self._create(url, body, deployment, wait=False)
        if pred.get("status") in ("failed", "canceled", "aborted"):
            check_terminal(pred, name)
        stream_url = self._url(pred, "stream")
        if not stream_url:
            await self._cancel(pred, name)
            raise UpstreamBadResponse(f"upstream {name!r} does not support streaming "
                                      "(no urls.stream)", deployment=name)
        pid = str(pred.get("id") or "")
        created = int(time.time())

        def chunk(delta: JSON, finish: str | None = None) -> StreamChunk:
            return StreamChunk(data={
                "id": pid, "object": "chat.completion.chunk", "created": created,
                "model": deployment.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]})

        follow = self.may_stream_from(stream_url)
        final = [pred]
        if follow:
            output = self._sse_output(str(stream_url), name)
        else:
            log.warning("upstream %r: prediction urls.stream points at %s, neither base_url's "
                        "origin nor a follow_hosts entry; not opening it (the API token would "
                        "go along), polling the prediction instead", name,
                        origin_text(url_origin(stream_url)))
            output = self._polled_output(pred, name, final)
        finished = False
        try:
            pieces: list[str] = []
            role_sent = False
            async for text in output:
                if not role_sent:
                    role_sent = True
                    yield chunk({"role": "assistant", "content": ""})
                if text:
                    pieces.append(text)
                    yield chunk({"content": text})
            if not role_sent:
                yield chunk({"role": "assistant", "content": ""})
            finished = True
            text = "".join(pieces)
            if follow:
                try:
                    for _ in range(3):
                        final[0] = await self._get(pred, name, timeout=min(t.idle, 10.0))
                        if final[0].get("status") in TERMINAL and final[0].get("metrics"):
                            break
                        await asyncio.sleep(self.poll_interval)
                except UpstreamError:
                    final[0] = pred
            usage = usage_of(final[0], body["input"], text)
            yield chunk({}, finish_reason(usage, body["input"]))
            yield StreamChunk(data={
                "id": pid, "object": "chat.completion.chunk", "created": created,
                "model": deployment.model, "choices": [], "usage": usage.to_openai()},
                usage=usage)
        finally:
            await output.aclose()
            if not finished:
                await self._cancel(pred, name)

    async def aclose(self) -> None:
        await self.http.aclose()
