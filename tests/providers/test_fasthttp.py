"""The httptools upstream client against real sockets on loopback: keep-alive reuse, a
stale kept-alive connection, chunked and EOF-delimited bodies, early release, back-pressure,
refused connections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from tierline.providers.fasthttp import FastPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(r: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await r.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    return head, await r.readexactly(n)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(r, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def pool(url: str) -> FastPool:
    return FastPool(url, max_connections=4, connect_timeout=2)


async def keepalive_json(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        _head, body = await read_request(r)
        out = b'{"echo": %d}' % len(body)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d"
                b"\r\n\r\n%s" % (len(out), out))
        await w.drain()


async def test_keep_alive_reuses_one_connection() -> None:
    srv = Server(keepalive_json)
    async with srv as url:
        p = pool(url)
        for i in range(20):
            resp = await p.request("POST", "/v1/x", {"content-type": "application/json"},
                                   b"x" * i)
            assert resp.status == 200 and resp.headers["content-type"] == "application/json"
            assert await resp.read() == b'{"echo": %d}' % i
            resp.release()
        assert srv.connections == 1
        p.close()


async def test_stale_keepalive_connection_is_retried_on_a_fresh_one() -> None:
    async def one_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await w.drain()
        # keep-alive advertised, but the server drops the connection right after

    srv = Server(one_then_close)
    async with srv as url:
        p = pool(url)
        for _ in range(3):
            resp = await p.request("POST", "/", {}, b"{}")
            assert await resp.read() == b"ok"
            await asyncio.sleep(0.05)  # let the close arrive... or not
        assert srv.connections == 3
        p.close()


async def test_chunked_and_eof_delimited_bodies() -> None:
    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")
        await w.drain()

    async with Server(chunked) as url:
        resp = await pool(url).request("POST", "/", {}, b"{}")
        assert await resp.read() == b"data: 1\n\ndata: 2\n\n"

    async def eof_body(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await w.drain()

    async with Server(eof_body) as url:
        resp = await pool(url).request("GET", "/", {}, None)
        assert await resp.read() == b"until the end"


async def test_truncated_chunked_body_is_an_error() -> None:
    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()

    async with Server(cut) as url:
        resp = await pool(url).request("POST", "/", {}, b"{}")
        assert await resp.readany() == b"hello"
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await resp.readany()


async def test_early_release_closes_and_back_pressure() -> None:
    async def big(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (8 << 20))
        for _ in range(8):
            w.write(b"x" * (1 << 20))
            await w.drain()

    srv = Server(big)
    async with srv as url:
        p = pool(url)
        resp = await p.request("POST", "/", {}, b"{}")
        got = 0
        while got < (3 << 20):
            got += len(await resp.readany())
        resp.release()  # unfinished: the connection is dropped, not reused
        assert not p.idle
        resp = await p.request("POST", "/", {}, b"{}")
        assert len(await resp.read()) == 8 << 20
        assert srv.connections == 2


async def test_refused_connection() -> None:
    p = pool("http://127.0.0.1:9")
    with pytest.raises(aiohttp.ClientConnectionError):
        await p.request("POST", "/", {}, b"{}")
