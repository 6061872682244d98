"""The shared shape of every mock upstream: a real aiohttp.web server on 127.0.0.1.

    async with MockAnthropic() as m:      # or: await m.start() ... await m.stop()
        m.script(text="hi")               # queue what the next request gets (FIFO)
        ...call m.url...
        m.requests[-1].json               # what the adapter actually sent

Each subclass registers its routes in `routes()` and renders the scripts. When the script
queue is empty the mock answers with `default_script()`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web

S = TypeVar("S")


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


class MockServer(Generic[S]):
    """Base class: start/stop, async context manager, a FIFO of scripts, recorded requests."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._scripts: deque[S] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"

    # -- to override ------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def default_script(self) -> S:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:54321 (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MockServer[S]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- scripting ----------------------------------------------------------------------
    def push(self, script: S) -> S:
        self._scripts.append(script)
        return script

    def next_script(self) -> S:
        return self._scripts.popleft() if self._scripts else self.default_script()

    def reset(self) -> None:
        self.requests.clear()
        self._scripts.clear()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(RecordedRequest(
            method=request.method, path=request.path, headers=dict(request.headers),
            body=body, query=dict(request.query)))
        return await handler(request)  # type: ignore[no-any-return]


# -- helpers for handlers ------------------------------------------------------------------

def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, headers=headers,
                        content_type=content_type)


async def sse_start(request: web.Request, headers: dict[str, str] | None = None
                    ) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={
        "content-type": "text/event-stream", "cache-control": "no-cache", **(headers or {})})
    await resp.prepare(request)
    return resp


async def sse_send(resp: web.StreamResponse, data: Any, event: str | None = None,
                   event_id: str | None = None, delay: float = 0.0) -> None:
    """Write one SSE event. `data` may be bytes/str (sent as is, split on newlines) or JSON."""
    if delay:
        await asyncio.sleep(delay)
    if isinstance(data, (bytes, str)):
        raw = data.encode() if isinstance(data, str) else data
    else:
        raw = orjson.dumps(data)
    out = b""
    if event is not None:
        out += b"event: " + event.encode() + b"\n"
    if event_id is not None:
        out += b"id: " + event_id.encode() + b"\n"
    for line in raw.split(b"\n"):
        out += b"data: " + line + b"\n"
    await resp.write(out + b"\n")


def split_text(text: str, n: int) -> list[str]:
    """`text` in `n` roughly equal non-empty pieces (fewer when text is short)."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n)
    return [text[i:i + size] for i in range(0, len(text), size)]
