"""One streamed chat request, timed from `time.perf_counter_ns` stamps.

TTFT = the first output delta: content, a tool-call fragment or reasoning text (an answer
that is only a tool call has a first token too); inter-token latency = gaps between
output chunks; TPOT = (e2e - ttft) / (completion_tokens - 1) with provider-reported usage,
only when the output came in more than one chunk; errors are classified as
`http_<status>`, `timeout`, `connection`, `stream_error`, `truncated`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from tierline.bench.targets import Target


@dataclass(slots=True)
class StreamResult:
    ok: bool = False
    error_class: str | None = None
    http_status: int | None = None
    error: str | None = None
    text: str = ""
    ttft_ms: float | None = None
    e2e_ms: float = 0.0
    itl_ms: list[float] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    route_model: str | None = None
    route: str | None = None
    cost_header: str | None = None  # x-tierline-cost-usd (a tierline gateway's answer)


def _err_message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
        msg = body.get("error", {}).get("message") if isinstance(body, dict) else None
        if msg:
            return str(msg)[:300]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return raw[:300].decode("utf-8", "replace")


class _Sse:
    """Accumulates one stream's events into a StreamResult."""

    def __init__(self, res: StreamResult, t0: int) -> None:
        self.res, self.t0 = res, t0
        self.parts: list[str] = []
        self.last: int | None = None
        self.done = False

    def event(self, data: str, now: int) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.fail("stream_error", "malformed chunk")
            return
        if not isinstance(obj, dict):
            return
        if obj.get("error"):
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else str(err)
            self.fail("stream_error", str(msg))
            return
        if obj.get("usage"):
            self.res.usage = obj["usage"]
        for ch in obj.get("choices") or []:
            delta = ch.get("delta") or {}
            content = delta.get("content")
            if content:
                self.parts.append(content)
            if content or delta.get("tool_calls") or delta.get("reasoning_content"):
                self.output(now)
            if ch.get("finish_reason"):
                self.res.finish_reason = ch["finish_reason"]
                if ch["finish_reason"] == "error":
                    self.fail("stream_error", "finish_reason error")

    def output(self, now: int) -> None:
        """A chunk that carries output: the first one is the first token."""
        if self.res.ttft_ms is None:
            self.res.ttft_ms = (now - self.t0) / 1e6
        elif self.last is not None:
            self.res.itl_ms.append((now - self.last) / 1e6)
        self.last = now

    def fail(self, cls: str, msg: str) -> None:
        if self.res.error_class is None:
            self.res.error_class, self.res.error = cls, msg[:300]


async def stream_chat(session: aiohttp.ClientSession, target: Target, base_url: str,
                      request: dict[str, Any], timeout: float) -> StreamResult:
    res = StreamResult()
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    body = orjson.dumps(target.body(request))
    t0 = time.perf_counter_ns()
    sse = _Sse(res, t0)
    try:
        async with asyncio.timeout(timeout):
            async with session.post(base_url + "/chat/completions", data=body,
                                    headers=headers) as resp:
                res.http_status = resp.status
                res.route_model = resp.headers.get("x-tierline-model")
                res.route = resp.headers.get("x-tierline-route")
                res.cost_header = resp.headers.get("x-tierline-cost-usd")
                if resp.status != 200:
                    sse.fail(f"http_{resp.status}", _err_message(await resp.read()))
                else:
                    buf: list[str] = []
                    async for raw in resp.content:
                        now = time.perf_counter_ns()
                        line = raw.decode("utf-8", "replace").rstrip("\r\n")
                        if not line:
                            if buf:
                                sse.event("\n".join(buf), now)
                                buf = []
                            continue
                        if line.startswith("data:"):
                            buf.append(line[5:].removeprefix(" "))
                    if buf:
                        sse.event("\n".join(buf), time.perf_counter_ns())
                    if not sse.done:
                        sse.fail("truncated", "stream ended without [DONE]")
    except TimeoutError:
        sse.fail("timeout", f"no complete answer within {timeout:g} s")
    except aiohttp.ClientConnectionError as e:
        sse.fail("connection", f"{type(e).__name__}: {e}")
    except aiohttp.ClientError as e:
        sse.fail("connection", f"{type(e).__name__}: {e}")
    res.e2e_ms = (time.perf_counter_ns() - t0) / 1e6
    res.text = "".join(sse.parts)
    res.ok = res.error_class is None
    return res
