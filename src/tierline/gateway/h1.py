"""A lean HTTP/1.1 server protocol for the gateway's ASGI app (httptools + asyncio).

Why not uvicorn on the hot path: its send path writes the status line and headers in one
syscall and the body in another, re-validates every header with regexes and builds a dict
per message; at ~4,000 req/s on one core those were the largest single share of the
gateway's CPU (docs/performance.md). This protocol implements what the app needs:

* keep-alive, HTTP/1.0, `Connection: close`, pipelined requests (answered in order),
  chunked and content-length request bodies, `Expect: 100-continue`, HEAD;
* the status line and headers go out *with the first body part* (one write per JSON reply;
  headers + first event for a stream); chunked transfer encoding when the app sets no
  content-length (for an HTTP/1.0 client, which cannot read chunks: the body unframed, then
  the connection closes);
* back-pressure both ways: reading pauses while a body waits to be consumed or while a
  pipelined request waits; `send` waits while the socket buffer is full, and while it is
  full (a client not reading its replies) no further pipelined request is started and
  reading does not resume; at most `MAX_PIPELINED` requests wait behind the one being
  answered (the bytes after them stay unparsed until the queue moves);
* `receive()` returns `http.disconnect` when the client goes away (the gateway cancels the
  upstream call) or once the response is complete;
* protocol errors answered as OpenAI-shaped JSON (400 malformed, 414 URL too long,
  431 headers too large) with an `x-request-id`, in pipelining order (after the responses to
  the valid requests before the bad one), then the connection is closed; a request whose
  body is malformed gets the error instead of its response (its app sees a disconnect); a
  crashing app gets a 500 without details (or a closed connection if the response had
  started).

Limits: 8 KiB request line, 64 KiB of headers. Deadlines, enforced by the server's sweeper
(`H1Server`): a connection with no request being answered is closed `keep_alive_timeout`
seconds after its last byte (or the last progress of a client reading its replies); a
request's head must arrive within `request_header_timeout` seconds of its first byte and its
whole body within `request_body_timeout` seconds of the end of its head, else it is answered
408 (in pipelining order, like a protocol error) and the connection closes. Only the
receiving of a request is timed, and only while the server is reading (not while a pipelined
request waits its turn or the app has not consumed the body yet): a long response is never
cut. Protocol upgrades are not performed: such a request is answered as plain HTTP, then the
connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools

from tierline.gateway.h1cycle import Cycle, error_response

if TYPE_CHECKING:
    from tierline.gateway.h1server import H1Server

log = logging.getLogger("tierline.http")

MAX_URL = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
BODY_HIGH_WATER = 256 * 1024  # pause reading while this much body waits for the app
# pipelined requests waiting behind the one being answered; the parser cannot stop in the
# middle of a buffer, so a read is parsed in slices of FEED_SLICE bytes and the rest is kept
# unparsed once the queue is full (at most FEED_SLICE / 18 requests past the limit: 18 bytes
# is the shortest request, `GET / HTTP/1.1\r\n\r\n`)
MAX_PIPELINED = 16
FEED_SLICE = 4096
NO_DEADLINE = float("inf")



class H1Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: H1Server) -> None:
        self.server = server
        self.loop = server.loop
        self.app = server.app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.active: Cycle | None = None  # the request being answered
        self.parsing: Cycle | None = None  # the request being read (pipelining: a later one)
        self.queue: deque[Cycle] = deque()
        # received bytes not parsed yet (the pipelining queue was full)
        self.pending: bytes | None = None
        self.upgraded = False  # the bytes after the current request are not HTTP/1.1
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.read_paused = False
        self.paused_at = 0.0  # when reading was paused (the receive deadline is shifted)
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.closing = False
        # a protocol error answer waiting for the responses to the requests before it
        self.error_reply: bytes | None = None
        # last byte received, response finished or write buffer drained; with no request
        # being answered, the sweeper closes the connection keep_alive_timeout after it
        self.last_activity = 0.0
        # when the request being received must be complete: its head request_header_timeout
        # after its first byte, its body request_body_timeout after its head (NO_DEADLINE
        # between requests); checked by the sweeper while reading is not paused
        self.recv_deadline = NO_DEADLINE
        self.swept_buffer = 0  # write buffer size at the last sweep (progress of a reader)
        self.task: asyncio.Task[None] | None = None

    # -- transport events ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.sockname = (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) else None
        self.last_activity = self.loop.time()
        if len(self.server.connections) >= self.server.max_connections:
            self.server.refused_connection()
            self.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        for c in (self.active, *self.queue):
            if c is not None:
                c.disconnected = True
                c.wake()
        a = self.active
        if a is not None and a.cancel_on_disconnect and self.task is not None:
            self.task.cancel()  # the app asked for it: stop the upstream call at once
        self.queue.clear()
        self.pending = None
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self.error_reply is not None or self.upgraded:
            return  # the stream is broken: nothing after the error is read
        if self.pending is not None:  # (reading is paused meanwhile; a late read)
            self.pending += data
        elif len(data) <= FEED_SLICE:
            self._feed(data)
        else:
            self._feed_slices(data)

    def _feed_slices(self, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(data), FEED_SLICE):
            if self.error_reply is not None or self.upgraded or self.closing:
                return
            if len(self.queue) >= MAX_PIPELINED:
                self.pending = bytes(view[i:])
                self.pause_reading()
                return
            self._feed(view[i:i + FEED_SLICE])

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # no protocol switch here: the request is answered as plain HTTP, then the
            # connection closes (whatever follows the headers is not HTTP/1.1)
            self.upgraded = True
            self.recv_deadline = NO_DEADLINE
            if self.parsing is not None:
                self.parsing.keep_alive = False
                self.parsing.more_body = False
                self.parsing.wake()
            self.pause_reading()
        except (httptools.HttpParserError, _Reject) as e:
            # httptools wraps what a callback raises; ours carries the status to answer
            r = e if isinstance(e, _Reject) else e.__context__
            if isinstance(r, _Reject):
                self._reject(r.status, r.message, r.code)
            else:
                self._reject(400, f"malformed HTTP request: {e}", "invalid_http")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.last_activity = self.loop.time()  # the client reads
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        if self.active is None and not self.closing:
            self._advance()  # what cycle_done held back

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        # last_activity: when the bytes being parsed arrived
        self.recv_deadline = self.last_activity + self.server.request_header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            raise _Reject(414, "request URL too long", "url_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _Reject(431, "request headers too large", "headers_too_large")
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        p = self.parser
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            raise _Reject(400, "invalid request URL", "invalid_url") from None
        raw_path: bytes = url.path or b"/"
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path, encoding="utf-8", errors="replace")
        method = p.get_method().decode("latin-1")
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": p.get_http_version(), "server": self.sockname,
            "client": self.client, "scheme": "http", "method": method, "root_path": "",
            "path": path, "raw_path": raw_path, "query_string": url.query or b"",
            "headers": self.headers,
        }
        expect = any(k == b"expect" and v.lower() == b"100-continue" for k, v in self.headers)
        cycle = Cycle(self, scope, p.should_keep_alive(), expect)
        scope["extensions"] = {"tierline.disconnect": cycle}
        self.parsing = cycle
        self.recv_deadline = self.last_activity + self.server.request_body_timeout
        if self.active is None and not self.write_paused:
            self._start(cycle)
        else:
            self.queue.append(cycle)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        c = self.parsing
        if c is None or c.complete or c.disconnected:
            return
        c.body.append(body)
        c.buffered += len(body)
        if c.buffered > BODY_HIGH_WATER:
            self.pause_reading()
        c.wake()

    def on_message_complete(self) -> None:
        self.recv_deadline = NO_DEADLINE
        c = self.parsing
        if c is not None:
            c.more_body = False
            c.wake()

    # -- cycles ----------------------------------------------------------------------------
    def _start(self, cycle: Cycle) -> None:
        self.active = cycle
        self.task = self.loop.create_task(cycle.run(self.app))

    def cycle_done(self, cycle: Cycle) -> None:
        self.active = None
        self.task = None
        if self.closing or self.transport is None:
            return
        if not cycle.keep_alive or cycle.more_body:
            self.close()
            return
        self.last_activity = self.loop.time()
        self._advance()

    def _advance(self) -> None:
        """Between responses: start the next pipelined request (parsing what was held back
        for the queue), or write a pending error reply, or resume reading - unless the
        client is not reading its replies (the write buffer is full): `resume_writing` calls
        this again once it drained."""
        if self.write_paused:
            return
        if self.queue:
            self._start(self.queue.popleft())
            if self.pending is not None:
                data, self.pending = self.pending, None
                # reading stays paused: the deadlines of what is parsed now start now
                self.last_activity = self.paused_at = self.loop.time()
                self._feed_slices(data)
                if self.closing:
                    return
        elif self.error_reply is not None:
            self.write(self.error_reply)
            self.close()
            return
        elif self.server.should_exit:
            self.close()
            return
        self.resume_reading()

    # -- helpers ---------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    async def drain(self) -> None:
        if not self.write_paused or self.closing:
            return
        self.drain_waiter = self.loop.create_future()
        try:
            await self.drain_waiter
        finally:
            self.drain_waiter = None

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = True
            self.paused_at = self.loop.time()
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closing:
            if self.queue or self.pending is not None or self.error_reply is not None \
                    or self.upgraded:
                return  # a pipelined request (or an error) is already waiting: no more
            self.read_paused = False
            if self.recv_deadline != NO_DEADLINE:
                # the client had no chance to send while we did not read
                self.recv_deadline += self.loop.time() - self.paused_at
            self.transport.resume_reading()

    def close(self, *, abort: bool = False) -> None:
        """Close (after the write buffer is flushed), or with `abort` at once, dropping what
        a client that does not read has left in the buffer."""
        if self.transport is None:
            return
        if abort:
            self.closing = True
            self.transport.abort()
        elif not self.closing:
            self.closing = True
            self.transport.close()

    def write_buffered(self) -> int:
        if self.transport is None:
            return 0
        return int(self.transport.get_write_buffer_size())

    def timed_out(self) -> None:
        """The request being received missed its deadline (called by the sweeper)."""
        self.recv_deadline = NO_DEADLINE
        c = self.parsing
        if c is not None and c.more_body:
            what = f"request body not received within {self.server.request_body_timeout:g} s"
        else:
            what = (f"request headers not received within "
                    f"{self.server.request_header_timeout:g} s")
        log.debug("%s from %s: 408", what, self.client[0] if self.client else "?")
        self._reject(408, what, "request_timeout")

    def _reject(self, status: int, message: str, code: str) -> None:
        """Answer a protocol error after the responses still due (pipelining order), then
        close. The request whose body was being read when the error came (if any) is the
        one the error answers: it is dropped if still queued, its app sees a disconnect if
        it is running."""
        reply = error_response(status, message, code, self.server.new_request_id())
        self.pending = None
        self.recv_deadline = NO_DEADLINE
        c = self.parsing
        if c is not None and c.more_body:
            self.parsing = None
            if self.queue and self.queue[-1] is c:
                self.queue.pop()
            elif c is self.active:
                written = c.started and c.head is None
                c.disconnected = True
                c.wake()
                if not written and not c.complete:
                    self.write(reply)
                self.close()
                return
        if self.active is None and not self.queue:  # (a queue waits for the write buffer)
            self.write(reply)
            self.close()
            return
        self.error_reply = reply
        self.pause_reading()


class _Reject(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
