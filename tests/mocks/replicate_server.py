"""A scriptable mock of Replicate's HTTP predictions API (base URL: `m.url + "/v1"`).

    async with MockReplicate() as m:
        m.script(output=["Hel", "lo"], metrics={"input_token_count": 9, "output_token_count": 2})
        m.script(polls=3)                          # ignore Prefer: wait; "processing" 3 GETs
        m.script(status="failed", error="CUDA out of memory")
        m.script(http_status=422, detail="- input.max_tokens: must be >= 1")
        m.script(http_status=429, detail="Request was throttled.", headers={"retry-after": "2"})
        m.script(stream_error="model crashed", error_after=1)
        m.script(url_base="http://elsewhere:1234")  # urls.get/cancel/stream point there
        ProviderSpec(name="replicate", wire="replicate", base_url=m.url + "/v1", api_key="r8_x")

Endpoints (as Replicate's): POST /v1/models/{owner}/{name}/predictions, POST /v1/predictions
(with "version"), GET /v1/predictions/{id}, POST /v1/predictions/{id}/cancel, and the
prediction's `urls.stream` (GET, SSE: `event: output` / `event: error` / `event: done` with an
`id:` per event, multi-line output as several `data:` lines). A prediction object has id,
model, version, input, logs, output (a list of string pieces), error, status
(starting / processing / succeeded / failed / canceled), created_at, urls {get, cancel,
stream, web}, metrics {predict_time, input_token_count, output_token_count, ...}.
`Prefer: wait` answers with the finished prediction unless the script says `polls > 0`.
Error bodies are problem+json: {"title", "detail", "status"} (422 adds "invalid_fields").
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.mocks.base import MockServer, json_response, sse_send, sse_start

_ids = itertools.count(1)

TITLES = {401: "Unauthenticated", 402: "Payment required", 404: "Not found",
          422: "Input validation failed", 429: "Request was throttled",
          500: "Internal server error"}


@dataclass
class ReplicateScript:
    output: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " mock."])
    metrics: dict[str, Any] | None = field(default_factory=lambda: {
        "predict_time": 0.42, "input_token_count": 11, "output_token_count": 4,
        "tokens_per_second": 50.0, "time_to_first_token": 0.1})
    status: str = "succeeded"  # the terminal status: succeeded / failed / canceled
    error: str | None = None  # prediction.error when failed
    polls: int = 0  # GETs that still answer "processing" (Prefer: wait is then not honored)
    streamable: bool = True  # include urls.stream
    url_base: str | None = None  # the origin urls.get/cancel/stream name (default: this mock)
    # create-time HTTP errors
    http_status: int = 201
    detail: str = "error"
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # create response body sent verbatim (status 201)
    # streams
    stream_error: str | None = None  # an `error` event after `error_after` outputs
    error_after: int = 1
    done_reason: str | None = None  # {"reason": ...} in the done event (e.g. "canceled")
    truncate: bool = False  # stream ends without `done`
    latency: float = 0.0
    delay: float = 0.0  # between stream events


@dataclass
class _Prediction:
    script: ReplicateScript
    obj: dict[str, Any]
    gets: int = 0
    canceled: bool = False


class MockReplicate(MockServer[ReplicateScript]):
    def __init__(self) -> None:
        super().__init__()
        self.predictions: dict[str, _Prediction] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create)
        app.router.add_post("/v1/predictions", self._create)
        app.router.add_get("/v1/predictions/{id}", self._get)
        app.router.add_post("/v1/predictions/{id}/cancel", self._cancel)
        app.router.add_get("/v1/stream/{id}", self._stream)

    def default_script(self) -> ReplicateScript:
        return ReplicateScript()

    def script(self, **kw: Any) -> ReplicateScript:
        return self.push(ReplicateScript(**kw))

    @property
    def canceled(self) -> list[str]:
        return [pid for pid, p in self.predictions.items() if p.canceled]

    @staticmethod
    def problem(status: int, detail: str, headers: dict[str, str] | None = None
                ) -> web.Response:
        body: dict[str, Any] = {"title": TITLES.get(status, "Error"), "detail": detail,
                                "status": status}
        if status == 422:
            body["invalid_fields"] = [{"type": "invalid", "field": "input",
                                       "description": detail}]
        return json_response(body, status=status, headers=headers,
                             content_type="application/problem+json")

    def _finish(self, p: _Prediction) -> None:
        s, o = p.script, p.obj
        o["status"] = "canceled" if p.canceled else s.status
        o["completed_at"] = "2025-01-01T00:00:02.000000Z"
        if o["status"] == "succeeded":
            o["output"] = list(s.output)
            if s.metrics is not None:
                o["metrics"] = dict(s.metrics)
        elif o["status"] == "failed":
            o["error"] = s.error or "Prediction failed"
            o["output"] = None

    async def _create(self, request: web.Request) -> web.Response:
        s = self.next_script()
        if s.latency:
            await asyncio.sleep(s.latency)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or len(auth) <= 7:
            return self.problem(401, "You did not pass a valid authentication token")
        if s.http_status >= 400:
            return self.problem(s.http_status, s.detail, s.headers)
        if s.raw is not None:
            return web.Response(body=s.raw, status=201, content_type="application/json")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self.problem(400, "Invalid JSON")
        if not isinstance(body.get("input"), dict):
            return self.problem(422, "- input: input is required")
        if "name" in request.match_info:
            model = f"{request.match_info['owner']}/{request.match_info['name']}"
            version = "dp-0123456789abcdef"
        else:
            if not body.get("version"):
                return self.problem(422, "- version: version is required")
            model, version = "owner/model", str(body["version"])
        pid = f"p{next(_ids):06d}mockpred"
        base = s.url_base or self.url
        api = f"{base}/v1/predictions/{pid}"
        urls = {"get": api, "cancel": api + "/cancel",
                "web": f"https://replicate.com/p/{pid}"}
        if s.streamable and body.get("stream"):
            urls["stream"] = f"{base}/v1/stream/{pid}"
        obj: dict[str, Any] = {
            "id": pid, "model": model, "version": version, "input": body["input"],
            "logs": "", "output": None, "data_removed": False, "error": None,
            "status": "starting", "created_at": "2025-01-01T00:00:00.000000Z",
            "urls": urls,
        }
        p = _Prediction(s, obj)
        self.predictions[pid] = p
        wait = request.headers.get("prefer", "").startswith("wait")
        if wait and s.polls == 0 and not body.get("stream"):
            self._finish(p)
        return json_response(obj, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        p = self.predictions.get(request.match_info["id"])
        if p is None:
            return self.problem(404, "The requested resource could not be found.")
        p.gets += 1
        if p.obj["status"] not in ("succeeded", "failed", "canceled"):
            if p.gets > p.script.polls or p.canceled:
                self._finish(p)
            else:
                p.obj["status"] = "processing"
                p.obj["output"] = p.script.output[:p.gets]
        return json_response(p.obj)

    async def _cancel(self, request: web.Request) -> web.Response:
        p = self.predictions.get(request.match_info["id"])
        if p is None:
            return self.problem(404, "The requested resource could not be found.")
        if p.obj["status"] not in ("succeeded", "failed", "canceled"):
            p.canceled = True
            self._finish(p)
        return json_response(p.obj)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        p = self.predictions.get(request.match_info["id"])
        if p is None:
            return self.problem(404, "The requested resource could not be found.")
        s = p.script
        resp = await sse_start(request)
        n = 0
        for n, piece in enumerate(s.output):
            if s.stream_error is not None and n == s.error_after:
                break
            await sse_send(resp, piece, event="output", event_id=f"1690212292:{n}",
                           delay=s.delay)
            if p.canceled:
                break
        if s.stream_error is not None:
            p.script = ReplicateScript(**{**s.__dict__, "status": "failed",
                                          "error": s.stream_error})
            self._finish(p)
            await sse_send(resp, orjson.dumps({"detail": s.stream_error}), event="error",
                           event_id=f"1690212292:{n + 1}")
            await sse_send(resp, b"{}", event="done", event_id=f"1690212292:{n + 2}")
        elif not s.truncate:
            if s.done_reason == "canceled":
                p.canceled = True
            self._finish(p)
            done = {"reason": s.done_reason} if s.done_reason else {}
            await sse_send(resp, orjson.dumps(done), event="done",
                           event_id=f"1690212292:{n + 1}")
        await resp.write_eof()
        return resp
