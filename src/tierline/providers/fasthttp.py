"""A minimal HTTP/1.1 keep-alive client on asyncio protocols and httptools (the parser
uvicorn uses): the upstream side of the hot path.

Profiling the gateway showed a third of its CPU in aiohttp's client machinery (request
objects, header multidicts, writer tasks). This client writes a request in one call and
parses responses with httptools' C parser; a response duck-types the part of
`aiohttp.ClientResponse` the adapters use (`status`, `headers`, `read()`, `release()`,
`content.readany()`), and failures are raised as `aiohttp.ClientError` subclasses, so the
adapters and the error mapping do not know which transport ran.

Scope: plain HTTP and HTTPS, no proxies (a provider behind a proxy uses aiohttp), no
compression (it sends no Accept-Encoding), no redirects (APIs don't redirect POSTs).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httptools

_MAX_BUFFER = 1 << 20  # pause reading from the upstream above this many unread bytes


class FastResponse:
    """The response being received on one connection."""

    def __init__(self, conn: _Conn) -> None:
        self._conn: _Conn | None = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._headers_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.complete = False
        self.error: BaseException | None = None
        self.content = self  # `resp.content.readany()`, as with aiohttp

    # -- fed by the protocol --------------------------------------------------------------
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _MAX_BUFFER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.complete:
            return
        self.error = exc
        if not self._headers_done.done():
            self._headers_done.set_exception(exc)
        self._wake()

    # -- the aiohttp-like surface -----------------------------------------------------------
    async def readany(self) -> bytes:
        """Whatever body bytes are there (waiting for some); b"" at the end."""
        while not self._chunks:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        if self._buffered > _MAX_BUFFER and self._conn is not None:
            self._conn.resume()
        self._buffered = 0
        return data

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while True:
            data = await self.readany()
            if not data:
                return b"".join(parts)
            parts.append(data)

    def release(self) -> None:
        """Done with this response: an unfinished one closes its connection."""
        conn, self._conn = self._conn, None
        if conn is not None and not self.complete:
            conn.abort()


class _Conn(asyncio.Protocol):
    def __init__(self, pool: FastPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: FastResponse | None = None
        self.closed = False
        self.used = False

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._lost(aiohttp.ClientPayloadError(f"malformed HTTP response: {e}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        resp = self.resp
        if resp is not None and resp.status and "content-length" not in resp.headers and \
                "chunked" not in resp.headers.get("transfer-encoding", ""):
            # a body delimited by the end of the connection (HTTP/1.0 style): complete
            self.resp = None
            resp._finish()
            self.closed = True
            self.pool._done(self, reuse=False)
            return
        self._lost(aiohttp.ServerDisconnectedError())

    def _lost(self, exc: BaseException) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        resp = self.resp
        if resp is not None:
            self.resp = None
            resp._fail(exc)
            self.pool._done(self, reuse=False)

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.resp = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self.pool._done(self, reuse=False)

    # -- httptools callbacks --------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.resp is not None:
            self.resp.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        resp = self.resp
        if resp is not None:
            resp.status = self.parser.get_status_code()
            if not resp._headers_done.done():
                resp._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.resp is not None:
            self.resp._feed(body)

    def on_message_complete(self) -> None:
        resp = self.resp
        self.resp = None
        keep = self.parser.should_keep_alive()
        if resp is not None:
            resp._finish()
        self.pool._done(self, reuse=keep and not self.closed)


class FastPool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(self, origin: str, *, max_connections: int, connect_timeout: float) -> None:
        u = urlsplit(origin)
        self.host = u.hostname or "127.0.0.1"
        self.https = u.scheme == "https"
        self.port = u.port or (443 if self.https else 80)
        default = 443 if self.https else 80
        self.host_header = (self.host if self.port == default else f"{self.host}:{self.port}"
                            ).encode("latin-1")
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if self.https else None
        self.connect_timeout = connect_timeout
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(max_connections)
        self.busy: set[_Conn] = set()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: _Conn(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.https else None)
        except TimeoutError:
            raise aiohttp.ServerTimeoutError("connect timeout") from None
        except OSError as e:
            raise aiohttp.ClientConnectionError(
                f"cannot connect to {self.host}:{self.port}: {e.strerror or e}") from None
        return proto

    def _done(self, conn: _Conn, *, reuse: bool) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.slots.release()
            if reuse:
                self.idle.append(conn)

    async def request(self, method: str, path: str, headers: Any, body: bytes | None
                      ) -> FastResponse:
        """Send a request; return once the response headers arrived."""
        head = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), b"host: ",
                self.host_header, b"\r\n"]
        for k, v in headers.items():
            head.append(f"{k}: {v}\r\n".encode("latin-1"))
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(b"content-length: %d\r\n" % len(body or b""))
        head.append(b"\r\n")
        data = b"".join(head) + (body or b"")
        await self.slots.acquire()
        for attempt in (0, 1):
            conn: _Conn | None = None
            while self.idle:
                c = self.idle.pop()
                if not c.closed:
                    conn = c
                    break
            reused = conn is not None
            if conn is None:
                try:
                    conn = await self._connect()
                except BaseException:
                    self.slots.release()
                    raise
            self.busy.add(conn)
            resp = FastResponse(conn)
            conn.resp = resp
            conn.used = True
            assert conn.transport is not None
            conn.transport.write(data)
            try:
                await resp._headers_done
            except aiohttp.ServerDisconnectedError:
                # a kept-alive connection the server had closed: the request never got
                # there; try once more on a fresh connection (slot re-acquired)
                if reused and attempt == 0 and resp.status == 0:
                    await self.slots.acquire()
                    continue
                raise
            except BaseException:
                resp.release()
                raise
            return resp
        raise aiohttp.ServerDisconnectedError()  # pragma: no cover - loop always returns

    def close(self) -> None:
        for c in self.idle + list(self.busy):
            if c.transport is not None:
                c.transport.close()
        self.idle.clear()
