"""One request / response cycle of `h1.H1Connection`: the ASGI `receive` / `send` of a
request, the response head written with the first body part, chunked or content-length
framing, back-pressure on `send` (see `h1`'s docstring for the protocol as a whole)."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tierline.gateway.asgi import Message
    from tierline.gateway.h1 import H1Connection

log = logging.getLogger("tierline.http")

UNFRAMED = 1 << 62  # `Cycle.remaining` of an unframed (HTTP/1.0, no content-length) body
STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_response(status: int, message: str, code: str, request_id: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": code}})
    return (STATUS_LINES[status] + b"content-type: application/json\r\n"
            b"content-length: %d\r\nx-request-id: %s\r\nconnection: close\r\n\r\n%s"
            % (len(body), request_id.encode("latin-1", "replace"), body))


class Cycle:
    """One request and its response."""

    __slots__ = (
        "body",
        "body_read",
        "buffered",
        "cancel_on_disconnect",
        "chunked",
        "complete",
        "conn",
        "disconnected",
        "expect_continue",
        "head",
        "head_request",
        "keep_alive",
        "more_body",
        "remaining",
        "scope",
        "started",
        "unframed",
        "waiter",
    )

    def __init__(self, conn: H1Connection, scope: dict[str, Any], keep_alive: bool,
                 expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.buffered = 0  # bytes in `body`
        self.body_read = False  # the app has received the last part of the body
        self.more_body = True  # the parser has not seen the end of the body yet
        self.expect_continue = expect_continue
        self.started = False
        self.complete = False
        self.chunked = False
        self.unframed = False  # HTTP/1.0 stream: the body ends when the connection closes
        self.remaining = 0  # bytes of body still due under content-length
        self.head: bytes | None = None  # status line + headers not yet written
        self.head_request = scope["method"] == "HEAD"
        self.disconnected = False
        self.waiter: asyncio.Future[None] | None = None
        # set by the app (through scope["extensions"]["tierline.disconnect"], this cycle):
        # the server cancels the app's task when the client goes away - no watcher task
        self.cancel_on_disconnect = False

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        self.waiter = self.conn.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    # -- ASGI ------------------------------------------------------------------------------
    async def receive(self) -> Message:
        conn = self.conn
        if self.expect_continue and not self.started and not self.disconnected:
            self.expect_continue = False
            conn.write(CONTINUE)
        if not self.body_read:
            while not self.body and self.more_body and not self.disconnected:
                conn.resume_reading()
                await self._wait()
            if self.disconnected:
                return {"type": "http.disconnect"}
            data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self.body.clear()
            self.buffered = 0
            self.body_read = not self.more_body
            conn.resume_reading()
            return {"type": "http.request", "body": data, "more_body": self.more_body}
        while not self.disconnected and not self.complete:
            await self._wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        conn = self.conn
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self.started = True
            self.expect_continue = False
            self.head = self._head(message["status"], message.get("headers") or ())
            return
        if kind != "http.response.body" or self.complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.head_request:
            data = b""
        elif self.chunked:
            data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self.remaining:
                raise RuntimeError("response body longer than its content-length")
            self.remaining -= len(body)
            data = body
        if self.head is not None:
            data = self.head + data
            self.head = None
        if data:
            conn.write(data)
        if not more:
            if not self.head_request and not self.chunked and self.remaining \
                    and not self.unframed:
                raise RuntimeError("response body shorter than its content-length")
            self.complete = True
            self.wake()
        elif conn.write_paused:
            await conn.drain()

    def _head(self, status: int, headers: Any) -> bytes:
        line = STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        out = [line]
        n_headers = 0
        length: int | None = None
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                length = int(value)
                continue  # written once, below
            elif lname == b"connection" and b"close" in value.lower():
                self.keep_alive = False
                continue
            elif lname == b"transfer-encoding":
                continue  # decided here
            out += (lname, b": ", value, b"\r\n")
            n_headers += 1
        if length is not None:
            out += (b"content-length: %d\r\n" % length,)
            self.remaining = 0 if self.head_request else length
        elif status in (204, 304) or status < 200:
            self.remaining = 0
        elif self.head_request:
            pass
        elif self.scope.get("http_version") == "1.0":
            # no chunked encoding for HTTP/1.0 (RFC 7230 3.3.1): the end of the body is the
            # end of the connection
            self.unframed = True
            self.remaining = UNFRAMED
            self.keep_alive = False
        else:
            self.chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive or self.more_body:
            # a reply before the whole request body arrived: the rest of it would have to
            # be read and thrown away; closing is cheaper and safer
            self.keep_alive = False
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        head = b"".join(out)
        # exactly one CR and one LF per line we wrote: a header name or value carrying
        # either (response splitting) or a NUL is refused - three C-level scans instead of
        # checks per header
        lines = len(out) - 3 * n_headers
        if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
            raise RuntimeError("invalid character in a response header")
        return head

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as e:
            if not isinstance(e, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                log.exception("the app failed on %s %s", self.scope["method"],
                              self.scope["path"])
            if not self.started and not self.disconnected:
                self.keep_alive = False
                self.conn.write(error_response(500, "internal server error", "internal_error",
                                               self.conn.server.new_request_id()))
                self.complete = True
            elif not self.complete:
                self.keep_alive = False
            if not isinstance(e, Exception):
                raise
        else:
            if not self.complete and not self.disconnected:
                if self.head is not None or not self.started:
                    log.error("the app returned without a complete response")
                    self.keep_alive = False
                    if not self.started:
                        self.conn.write(error_response(500, "internal server error",
                                                       "internal_error",
                                                       self.conn.server.new_request_id()))
                else:
                    self.keep_alive = False
        finally:
            self.conn.cycle_done(self)
