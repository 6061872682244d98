"""POST /v1/chat/completions: validate -> route -> execute (fallbacks) -> respond ->
account. Every request, whatever happens, ends in exactly one `finish()` call, which
writes its request-log row, metrics and live stats.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from tierline.accounting import tokens
from tierline.accounting.log import LogRecord
from tierline.accounting.pricing import cost_pico, usd, worst_case_pico
from tierline.catalog.model import Deployment
from tierline.errors import TierlineError, UpstreamError, log_text
from tierline.gateway.asgi import (
    SSE_DONE,
    SSE_HEADERS,
    ClientDisconnected,
    Message,
    Receive,
    Scope,
    Send,
    encode_headers,
    read_body,
    request_headers,
    send_error,
    send_json,
    sse_event,
)
from tierline.gateway.validate import parse_chat_request
from tierline.keys.auth import merge_constraints
from tierline.keys.budget import Reservation
from tierline.keys.limits import Admission
from tierline.resilience.executor import Attempt, Trace, aclose_quietly
from tierline.routing.controls import with_defaults
from tierline.routing.filters import Constraints, required_capabilities, window_of
from tierline.types import ChatRequest, StreamChunk, Usage

if TYPE_CHECKING:
    from tierline.gateway.app import Gateway

log = logging.getLogger("tierline.gateway")


@dataclass
class Ctx:
    """The state of one request, filled in as it goes."""

    rid: str
    t0: float
    req: ChatRequest | None = None
    dep: Deployment | None = None
    route: str | None = None
    route_detail: dict[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)
    status: int = 200
    error: str | None = None
    ttft: float | None = None
    trace: Trace = field(default_factory=Trace)
    answer: str | None = None
    reservation: Reservation | None = None
    admission: Admission | None = None


class RequestIds:
    """Unique request ids without an os.urandom call per request: a random prefix per
    gateway instance (so per process) and a counter."""

    def __init__(self) -> None:
        self._prefix = "req_" + uuid.uuid4().hex[:16]
        self._n = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._n):016x}"


def _answer_text(body: dict[str, Any]) -> str:
    """What the model generated (text, refusals, tool calls' names and arguments): what a
    missing `usage` is estimated from, and what `log_prompts` logs."""
    out: list[str] = []
    for c in body.get("choices") or ():
        if isinstance(c, dict):
            m = c.get("message") or {}
            if isinstance(m, dict):
                _generated(m, out)
    return "\n".join(out)


def _delta_text(chunk: dict[str, Any]) -> str:
    out = ""
    for c in chunk.get("choices") or ():
        if isinstance(c, dict):
            d = c.get("delta")
            if isinstance(d, dict):
                v = d.get("content")
                if isinstance(v, str):
                    out += v
                if d.get("tool_calls") or d.get("refusal"):  # rare: off the common path
                    extra: list[str] = []
                    _generated({**d, "content": None}, extra)
                    out += "".join(extra)
    return out


def _generated(m: dict[str, Any], out: list[str]) -> None:
    """The generated parts of a message or a delta, appended to ``out``."""
    for k in ("content", "refusal"):
        v = m.get(k)
        if isinstance(v, str) and v:
            out.append(v)
    calls = m.get("tool_calls")
    if isinstance(calls, list):
        for tc in calls:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict):
                for k in ("name", "arguments"):
                    v = fn.get(k)
                    if isinstance(v, str) and v:
                        out.append(v)


def constraints_for(gw: Gateway, req: ChatRequest) -> Constraints:
    c = req.controls
    return Constraints(
        region=c.get("region"),
        zdr=bool(c.get("zdr", False)),
        no_training=bool(c.get("no_training", False)),
        open_weight=bool(c.get("open_weight", False)),
        max_cost_usd=c.get("max_cost_usd"),
        needs=required_capabilities(req.body),
        prompt_tokens=tokens.count_messages(req.messages),
        max_output_tokens=req.max_output_tokens,
        choices=n if isinstance(n := req.body.get("n"), int) and n > 1 else 1,
        unhealthy=gw.breakers.unhealthy(),
    )


async def handle_chat(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    ctx = Ctx(rid=gw.new_request_id(), t0=time.monotonic())
    gw.metrics.in_flight.inc(())  # back down in finish(), which runs exactly once
    headers = request_headers(scope)
    try:
        key = gw.keys.authenticate(headers)
        if key is None:
            gw.keys.guard_open_mode(headers)
        raw = await read_body(receive, headers, gw.config.server.max_body_bytes)
        req = parse_chat_request(raw, headers, request_id=ctx.rid,
                                 max_tokens_limit=gw.config.server.max_output_tokens_limit)
        req.key_id = key.id if key is not None else None
        if key is not None and key.routing:
            req.controls = with_defaults(req.controls, key.routing)
        ctx.req = req
        constraints = constraints_for(gw, req)
        out = req.max_output_tokens  # per choice: n choices may use n times as many
        ctx.admission = gw.keys.admit(key, req.model, constraints.prompt_tokens,
                                      out * constraints.choices if out else None)
        merge_constraints(constraints, gw.keys.constraints(key))
        decision = gw.router.route(req.model, req.controls, constraints,
                                   req.routing_text)
        ctx.route, ctx.route_detail = decision.reason, decision.detail
        if key is not None and key.budget_usd is not None:
            # any deployment of the fallback chain may end up serving: hold the worst
            worst = max(worst_case_pico(constraints.prompt_tokens, constraints.choices * (
                req.max_output_tokens or d.max_output_tokens
                or max(1, window_of(d) - constraints.prompt_tokens)), d.price)
                for d in decision.chain)
            ctx.reservation = gw.keys.reserve(key, worst)
        if req.stream:
            await _stream(gw, ctx, req, decision.chain, scope, send, receive)
        else:
            await _complete(gw, ctx, req, decision.chain, scope, send, receive)
    except ClientDisconnected:
        ctx.status, ctx.error = 499, "client disconnected"
    except TierlineError as e:
        gw.scrub(e)
        ctx.status, ctx.error = e.status, log_text(e)
        if isinstance(e, UpstreamError):
            if ctx.dep is None and e.deployment:
                ctx.dep = gw.router.catalog.deployments.get(e.deployment)
            if e.status == 429 and e.retry_after is not None:
                e.headers.setdefault("retry-after", str(max(1, math.ceil(e.retry_after))))
        await send_error(send, e, _base_headers(ctx))
    except Exception:  # a bug of ours: log it, answer a clean 500 without internals
        log.exception("request %s failed", ctx.rid)
        ctx.status, ctx.error = 500, "internal error"
        await send_json(send, 500, {"error": {"message": f"internal error (request {ctx.rid})",
                                              "type": "server_error", "param": None,
                                              "code": "internal_error"}}, _base_headers(ctx))
    finally:
        finish(gw, ctx)


def _base_headers(ctx: Ctx) -> dict[str, str]:
    h = {"x-request-id": ctx.rid}
    if ctx.dep is not None:
        h["x-tierline-model"] = ctx.dep.name
    if ctx.route:
        h["x-tierline-route"] = ctx.route
    h["x-tierline-cost-usd"] = "0"
    return h


def _settle_usage(ctx: Ctx, req: ChatRequest, usage: Usage | None, answer: str) -> None:
    if usage is None or usage.estimated or (usage.prompt_tokens == 0
                                            and usage.completion_tokens == 0):
        ctx.usage = Usage(prompt_tokens=tokens.count_messages(req.messages),
                          completion_tokens=tokens.count_text(answer), estimated=True)
    else:
        ctx.usage = usage


async def _complete(gw: Gateway, ctx: Ctx, req: ChatRequest, chain: list[Deployment],
                    scope: Scope, send: Send, receive: Receive) -> None:
    await _unless_gone(ctx, req, scope, receive, _answer(gw, ctx, req, chain, send), [])


async def _answer(gw: Gateway, ctx: Ctx, req: ChatRequest, chain: list[Deployment],
                  send: Send) -> None:
    dep, resp = await gw.executor.complete(req, chain, ctx.trace)
    ctx.dep = dep
    answer = _answer_text(resp.body)
    _settle_usage(ctx, req, resp.usage, answer)
    if gw.config.server.log_prompts:
        ctx.answer = answer
    h = _base_headers(ctx)
    h["x-tierline-cost-usd"] = usd(cost_pico(ctx.usage, dep.price) + ctx.trace.extra_pico)
    if ctx.usage.estimated or ctx.trace.extra_estimated:
        h["x-tierline-cost-estimated"] = "true"
        resp.body["usage"] = ctx.usage.to_openai()
    await send_json(send, 200, resp.body, h)


async def _stream(gw: Gateway, ctx: Ctx, req: ChatRequest, chain: list[Deployment],
                  scope: Scope, send: Send, receive: Receive) -> None:
    text: list[str] = []
    await _unless_gone(ctx, req, scope, receive, _pump(gw, ctx, req, chain, send, text),
                       text)


async def _unless_gone(ctx: Ctx, req: ChatRequest, scope: Scope, receive: Receive,
                       work: Coroutine[Any, Any, None], text: list[str]) -> None:
    """Run ``work`` (the upstream call and the answer) while watching for the client going
    away: then the upstream call is cancelled at once (no tokens generated for nobody, the
    embedded model's slot freed) and the partial usage is logged.

    On tierline's own server the work runs in this task and the server cancels it when the
    client goes away (`scope["extensions"]["tierline.disconnect"]`: nothing per request but
    a flag); on another ASGI server a watcher callback on `receive()` does it."""
    hook = scope.get("extensions", {}).get("tierline.disconnect")
    if hook is not None:
        hook.cancel_on_disconnect = True
        try:
            await work
        except asyncio.CancelledError:
            if not hook.disconnected:
                raise
            _gone(ctx, req, text)
        finally:
            hook.cancel_on_disconnect = False
        return
    task = asyncio.current_task()
    assert task is not None
    gone = False
    working = True

    def on_message(f: asyncio.Future[Message]) -> None:
        nonlocal gone
        if working and not f.cancelled() and f.exception() is None \
                and f.result().get("type") == "http.disconnect":
            gone = True
            task.cancel()

    watch: asyncio.Future[Message] = asyncio.ensure_future(receive())
    watch.add_done_callback(on_message)
    try:
        await work
    except asyncio.CancelledError:
        if not gone:
            raise
        _gone(ctx, req, text)
    finally:
        working = False
        watch.remove_done_callback(on_message)
        watch.cancel()


def _gone(ctx: Ctx, req: ChatRequest, text: list[str]) -> NoReturn:
    """The client went away and its work was cancelled for it: take the cancellation back,
    settle the partial usage, and say so (logged as 499)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    if ctx.dep is not None:
        _settle_usage(ctx, req, None, "".join(text))
    raise ClientDisconnected() from None


async def _pump(gw: Gateway, ctx: Ctx, req: ChatRequest, chain: list[Deployment],
                send: Send, text: list[str]) -> None:
    dep, head, rest, t_first = await gw.executor.open_stream(req, chain, ctx.trace)
    ctx.dep = dep
    ctx.ttft = t_first - ctx.t0
    h = _base_headers(ctx)
    # the cost of a stream is known only at its end: it is in the final usage chunk
    # (`usage.cost_usd`, when the client asked for usage) and in the request log
    h["x-tierline-cost-usd"] = "deferred"
    await send({"type": "http.response.start", "status": 200,
                "headers": SSE_HEADERS + encode_headers(h)})
    usage: Usage | None = None
    held = len(head)  # chunks read before committing: all in hand, written together
    chunk: StreamChunk | None = head[0]
    out: list[bytes] = []  # events to write together (chunks that arrived in one read)
    waiting_first_token = True
    try:
        while chunk is not None:
            if chunk.usage is not None:
                usage = chunk.usage
            else:
                delta = _delta_text(chunk.data)
                text.append(delta)
                data = chunk.raw if chunk.raw is not None else orjson.dumps(chunk.data)
                out.append(b"data: " + data + b"\n\n")
                more = chunk.more or held > 1
                if not more or (delta and waiting_first_token):
                    await send({"type": "http.response.body", "body": b"".join(out),
                                "more_body": True})
                    out.clear()
                    if delta and waiting_first_token:
                        # the first token is out: let the other streams' first tokens go
                        # before this one's rest (a read can carry the whole answer)
                        waiting_first_token = False
                        if more:
                            await asyncio.sleep(0)
            if held > 1:
                held -= 1
                chunk = head[len(head) - held]
            else:
                held = 0
                chunk = await anext(rest, None)
    except UpstreamError as e:
        # too late to fail over: tell the client inside the stream, log the partial usage
        gw.scrub(e)
        gw.breakers.failure(dep.name)
        ctx.trace.failed(dep, e)
        ctx.status, ctx.error = e.status, log_text(e)
        err = e.to_body()
        _settle_usage(ctx, req, usage, "".join(text))
        # what the broken stream cost is still owed: the usage chunk, when asked for
        tail = _usage_event(ctx, req, dep, head[0].data) if req.include_usage else b""
        out.append(sse_event(orjson.dumps(err)) + tail + SSE_DONE)
        await send({"type": "http.response.body", "body": b"".join(out), "more_body": False})
        return
    except BaseException:
        await aclose_quietly(rest)
        raise
    gw.breakers.success(dep.name)
    ctx.trace.ok(dep)
    answer = "".join(text)
    _settle_usage(ctx, req, usage, answer)
    if gw.config.server.log_prompts:
        ctx.answer = answer
    tail = _usage_event(ctx, req, dep, head[0].data) if req.include_usage else b""
    await send({"type": "http.response.body", "body": b"".join(out) + tail + SSE_DONE,
                "more_body": False})


def _usage_event(ctx: Ctx, req: ChatRequest, dep: Deployment, first: dict[str, Any]) -> bytes:
    """The stream's final usage chunk, with its cost (`estimated` when any of it was
    counted locally: no usage from the upstream, or a hedged call cancelled)."""
    u = ctx.usage.to_openai()
    u["cost_usd"] = usd(cost_pico(ctx.usage, dep.price) + ctx.trace.extra_pico)
    if ctx.usage.estimated or ctx.trace.extra_estimated:
        u["estimated"] = True
    final: dict[str, Any] = {"id": first.get("id"), "object": "chat.completion.chunk",
                             "created": first.get("created"), "model": first.get("model"),
                             "choices": [], "usage": u}
    return sse_event(orjson.dumps(final))


def _health_failure(a: Attempt) -> bool:
    """Did this attempt fail for the deployment's sake (not the request's: a 4xx on its
    merits says nothing about its speed)?"""
    if a.error_type == "HedgeCancelled":  # it lost a race: it did not fail
        return False
    return a.status is None or a.status >= 500 or a.status in (408, 429)


def finish(gw: Gateway, ctx: Ctx) -> None:
    """Account for one request: exactly one request-log row, metrics, live stats."""
    now = time.monotonic()
    latency = now - ctx.t0
    dep = ctx.dep
    cost = (cost_pico(ctx.usage, dep.price) if dep is not None else 0) + ctx.trace.extra_pico
    gw.keys.settle(ctx.reservation, cost)
    gw.keys.settle_tokens(ctx.admission, ctx.usage.prompt_tokens + ctx.usage.completion_tokens)
    model = dep.name if dep is not None else ""
    provider = dep.provider if dep is not None else ""
    req = ctx.req
    m = gw.metrics
    m.in_flight.inc((), -1.0)
    labels = (model, provider)
    m.requests.inc((model, provider, str(ctx.status)))
    if ctx.status >= 400:
        m.errors.inc((model, provider, "client" if ctx.status < 500 and ctx.status != 429
                      else "upstream"))
    for a in ctx.trace.attempts:
        if a.error is None:
            continue
        d = gw.router.catalog.deployments.get(a.deployment)
        if a.deployment != model:
            m.errors.inc((a.deployment, d.provider if d else "", a.error_type or "error"))
        if d is not None and _health_failure(a):
            spec = gw.router.catalog.providers[d.provider]
            gw.router.stats.observe_failure(
                d.name, penalty_s=d.first_token_timeout or spec.first_token_timeout)
    if dep is not None:
        m.latency.observe(labels, latency)
        if ctx.ttft is not None:
            m.ttft.observe(labels, ctx.ttft)
        u = ctx.usage
        m.tokens.inc(labels + ("prompt",), u.prompt_tokens)
        m.tokens.inc(labels + ("completion",), u.completion_tokens)
        if u.cached_tokens:
            m.tokens.inc(labels + ("cached",), u.cached_tokens)
        m.cost.inc(labels, cost / 1e12)
        if ctx.status == 200:
            gw.router.stats.observe(dep.name, latency_s=latency, ttft_s=ctx.ttft,
                                    output_tokens=u.completion_tokens)
    if gw.request_log is None:
        return
    detail: dict[str, Any] = dict(ctx.route_detail or {})
    if len(ctx.trace.attempts) > 1 or any(a.error for a in ctx.trace.attempts):
        detail["attempts"] = [{"deployment": a.deployment, "error": a.error,
                               "status": a.status} for a in ctx.trace.attempts]
    log_prompts = gw.config.server.log_prompts
    gw.request_log.write(LogRecord(
        id=ctx.rid, ts=time.time(), status=ctx.status,
        key_id=req.key_id if req else None,
        requested_model=req.model if req else None,
        deployment=dep.name if dep else None, provider=provider or None,
        route=ctx.route, stream=bool(req and req.stream),
        prompt_tokens=ctx.usage.prompt_tokens, completion_tokens=ctx.usage.completion_tokens,
        cached_tokens=ctx.usage.cached_tokens, cache_write_tokens=ctx.usage.cache_write_tokens,
        reasoning_tokens=ctx.usage.reasoning_tokens, cost_pico=cost,
        estimated=ctx.usage.estimated or ctx.trace.extra_estimated, error=ctx.error,
        latency_ms=round(latency * 1000, 3),
        ttft_ms=round(ctx.ttft * 1000, 3) if ctx.ttft is not None else None,
        attempts=max(1, len(ctx.trace.attempts)),
        route_detail=orjson.dumps(detail).decode() if detail else None,
        prompt=orjson.dumps(req.messages).decode() if (log_prompts and req) else None,
        response=ctx.answer if log_prompts else None,
    ))
