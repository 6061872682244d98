"""A chaos upstream: an OpenAI-format server on loopback that, at random (seeded), answers
429 / 500 / 503, stalls, resets the connection, truncates the stream, sends malformed
JSON, or sends an error inside a 200 stream. Faults happen before the first content chunk
(so a gateway can still fail over), unless `late_faults` is set.

Every successful answer reports usage `prompt_tokens = 20 + n % 13`, `completion_tokens =
3 + n % 5` (n = the server's request counter), so totals can be reconciled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

FAULTS = ("429", "500", "503", "stall", "reset", "truncate", "malformed", "error_in_200")


class ChaosServer:
    def __init__(self, *, fault_rate: float = 0.5, seed: int = 1, stall_s: float = 2.0,
                 late_faults: bool = False, chunks: int = 4) -> None:
        self.fault_rate = fault_rate
        self.rng = random.Random(seed)
        self.stall_s = stall_s
        self.late_faults = late_faults
        self.chunks = chunks
        self.counter = 0
        self.faults: Counter[str] = Counter()
        self.ok = 0
        self.usage_sent: list[tuple[int, int]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _usage(self, n: int) -> dict[str, int]:
        return {"prompt_tokens": 20 + n % 13, "completion_tokens": 3 + n % 5,
                "total_tokens": 23 + n % 13 + n % 5}

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.counter += 1
        n = self.counter
        fault = self.rng.choice(FAULTS) if self.rng.random() < self.fault_rate else None
        if fault:
            self.faults[fault] += 1
        stream = bool(body.get("stream"))
        if fault in ("429", "500", "503"):
            headers = {"retry-after-ms": "5"} if fault == "429" else {}
            return web.json_response(
                {"error": {"message": f"chaos {fault}", "type": "server_error",
                           "param": None, "code": None}}, status=int(fault), headers=headers)
        if fault == "stall":  # longer than the gateway's timeouts; never a success
            await asyncio.sleep(self.stall_s)
            return web.json_response({"error": {"message": "chaos stall"}}, status=503)
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError()
        usage = self._usage(n)
        if not stream:
            if fault == "malformed":
                return web.Response(body=b'{"id": "x", "choices": [', status=200,
                                    content_type="application/json")
            if fault in ("truncate", "error_in_200"):
                return web.json_response({"error": {"message": "chaos in 200"}})
            self.ok += 1
            self.usage_sent.append((usage["prompt_tokens"], usage["completion_tokens"]))
            return web.json_response({
                "id": f"chatcmpl-chaos{n}", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"answer {n}"}}],
                "usage": usage})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({
                "id": f"chatcmpl-chaos{n}", "object": "chat.completion.chunk",
                "created": 0, "model": body.get("model"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

        early = not self.late_faults
        if early and fault == "truncate":
            return resp  # headers, then the connection ends without a chunk
        if early and fault == "malformed":
            await resp.write(b"data: {\"choices\": [\n\n")
            return resp
        if early and fault == "error_in_200":
            await resp.write(chunk({}, "error"))
            return resp
        await resp.write(chunk({"role": "assistant", "content": ""}))
        for i in range(self.chunks):
            if not early and fault and i == self.chunks // 2:
                if fault == "error_in_200":
                    await resp.write(chunk({}, "error"))
                return resp
            await resp.write(chunk({"content": f"w{i} "}))
        await resp.write(chunk({}, "stop"))
        self.ok += 1
        self.usage_sent.append((usage["prompt_tokens"], usage["completion_tokens"]))
        await resp.write(b"data: " + orjson.dumps({
            "id": f"chatcmpl-chaos{n}", "object": "chat.completion.chunk", "created": 0,
            "model": body.get("model"), "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp
