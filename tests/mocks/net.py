"""Network helpers for transport tests: a catch-all recording server and a forward proxy.

    async with Catchall() as evil:                 # records every request, answers 200 "{}"
        ...
        assert evil.requests == []
    async with Catchall(redirect_to=evil.url + "/steal", status=307) as up:
        ...                                        # every request is answered 307 -> evil

    async with MockProxy() as proxy:               # set HTTP_PROXY=proxy.url
        ...
        proxy.lines   # ["POST http://127.0.0.1:1234/v1/chat/completions HTTP/1.1", ...]

`MockProxy` is an HTTP/1.1 forward proxy on 127.0.0.1 for plain-HTTP targets: it records the
absolute-form request line and headers of each request, forwards it to its target and writes
the whole answer back (one request per connection, `connection: close`). A CONNECT (an https
target) is recorded and refused with 502.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import web

from tests.mocks.base import MockServer

_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                  "transfer-encoding", "te", "upgrade", "host", "content-length"})


class Catchall(MockServer[None]):
    """Answers every method and path: a redirect when `redirect_to` is set, else 200 `{}`."""

    def __init__(self, redirect_to: str | None = None, status: int = 307) -> None:
        super().__init__()
        self.redirect_to = redirect_to
        self.status = status

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._any)

    def default_script(self) -> None:
        return None

    async def _any(self, request: web.Request) -> web.Response:
        if self.redirect_to is not None:
            return web.Response(status=self.status, headers={"location": self.redirect_to})
        return web.json_response({})


class MockProxy:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> MockProxy:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._client is not None:
            await self._client.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for h in rest:
                if ":" in h:
                    k, _, v = h.partition(":")
                    headers[k.strip().lower()] = v.strip()
            self.lines.append(line)
            self.headers.append(headers)
            method, target, _ = line.split(" ", 2)
            if method == "CONNECT" or not target.startswith("http://"):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n"
                             b"connection: close\r\n\r\n")
                return
            n = int(headers.get("content-length") or 0)
            body = await reader.readexactly(n) if n else None
            fwd = {k: v for k, v in headers.items() if k not in _HOP}
            assert self._client is not None
            async with self._client.request(method, target, headers=fwd, data=body,
                                            allow_redirects=False) as r:
                data = await r.read()
                out = [f"HTTP/1.1 {r.status} {r.reason}\r\n".encode("latin-1")]
                for k, v in r.headers.items():
                    if k.lower() not in _HOP:
                        out.append(f"{k}: {v}\r\n".encode("latin-1"))
                out.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(data))
                writer.write(b"".join(out) + data)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()


def proxy_env(monkeypatch: Any, proxy: str | None, no_proxy: str = "") -> None:
    """Point every proxy variable (both spellings) at `proxy` (or clear them); NO_PROXY set
    explicitly (a machine's default may exempt 127.0.0.1). Restored by monkeypatch."""
    for var in ("http_proxy", "https_proxy", "all_proxy"):
        for name in (var, var.upper()):
            if proxy is None or var == "all_proxy":
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, proxy)
    monkeypatch.setenv("no_proxy", no_proxy)
    monkeypatch.setenv("NO_PROXY", no_proxy)
