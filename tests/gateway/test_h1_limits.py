"""tierline's HTTP/1.1 server under hostile or slow clients: back-pressure on pipelined
requests whose replies are not read, deadlines on receiving a request, a connection cap."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from tests.gateway.test_h1 import EchoApp, Running, closed, post, read_response
from tierline.config import Config
from tierline.gateway import h1
from tierline.gateway.h1server import H1Server

BIG = b"x" * 4096


class LimitsApp(EchoApp):
    """EchoApp plus /big (a 4 KiB reply), /trickle (a stream longer than every deadline)
    and a record of the requests whose app saw the client go away."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.disconnects: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        path = scope["path"]
        if path == "/big":
            q = scope["query_string"]
            body = b"y" * int(q[5:]) if q.startswith(b"size=") else BIG
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % len(body)), (b"x-q", q)]})
            await send({"type": "http.response.body", "body": body})
            return
        if path == "/trickle":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(8):
                await asyncio.sleep(0.1)
                await send({"type": "http.response.body", "body": b"%d" % i,
                            "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/body":
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    self.disconnects.append(path)
                    return
                if not msg.get("more_body"):
                    break
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await super().__call__(scope, receive, send)


def on_loop(r: Running, fn: Any) -> Any:
    """fn() run on the server's loop (its state is not thread-safe)."""
    async def call() -> Any:
        return fn()
    return asyncio.run_coroutine_threadsafe(call(), r.server.loop).result(5)


def connection_state(r: Running) -> tuple[int, int, int, int]:
    def state() -> tuple[int, int, int, int]:
        if not r.server.connections:
            return (-1, -1, -1, -1)
        [c] = r.server.connections
        assert c.transport is not None
        return (c.transport.get_write_buffer_size(), len(c.queue),
                len(getattr(c, "pending", None) or b""), len(r.server.connections))
    result: tuple[int, int, int, int] = on_loop(r, state)
    return result


def test_pipelined_replies_not_read_stay_bounded() -> None:
    # the review's reproduction: one socket with a small receive buffer pipelines GETs and
    # never reads; before the fix every request was answered into the transport's buffer
    app = LimitsApp()
    with Running(app, keep_alive_timeout=1.0) as r:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", r.server.port))
        s.settimeout(2)
        req = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
        try:
            s.sendall(req * 20_000)  # 600 kB: blocks once the server stops reading
        except TimeoutError:
            pass
        time.sleep(0.5)
        buffered, queued, pending, _ = connection_state(r)
        replies = app.calls
        # the write buffer: about its high-water mark (64 KiB) plus one reply
        assert buffered < 256 * 1024, buffered
        assert queued <= h1.MAX_PIPELINED + h1.FEED_SLICE // len(req), queued
        assert pending < 1024 * 1024
        # what was answered: what fits in the socket buffers and the write buffer
        assert replies < 2000, replies
        time.sleep(0.5)
        assert app.calls == replies  # nothing more while the client does not read
        # keep_alive_timeout after the last progress the connection is dropped, unread
        # replies included (a plain close would wait for a reader that never comes)
        deadline = time.monotonic() + 5
        while connection_state(r)[3] != -1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert connection_state(r)[3] == -1
        s.close()


def test_requests_sent_one_by_one_without_reading_stay_bounded() -> None:
    # a client that sends its next request only after the server parsed the last one, and
    # never reads: the next request must wait while the write buffer is full, not start
    app = LimitsApp()
    with Running(app, keep_alive_timeout=5.0) as r:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", r.server.port))
        for _ in range(150):
            s.sendall(b"GET /big?size=262144 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.005)
        time.sleep(0.3)
        buffered, queued, _, _ = connection_state(r)
        assert buffered < 1024 * 1024, buffered
        assert queued <= h1.MAX_PIPELINED
        assert app.calls < 40, app.calls  # 256 KiB each: the socket buffers hold a few
        s.close()


def test_an_error_behind_a_request_held_back_by_back_pressure_comes_after_it() -> None:
    with Running(LimitsApp(), keep_alive_timeout=5.0) as r:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", r.server.port))
        big = b"GET /big?size=8388608 HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(big)
        time.sleep(0.3)  # answered; the write buffer stays full: the client does not read
        s.sendall(b"GET /big?size=10 HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        time.sleep(0.2)
        s.settimeout(5)
        buf = bytearray()
        assert read_response(s, buf)[0] == 200
        assert read_response(s, buf)[:3:2] == (200, b"y" * 10)
        status, headers, _ = read_response(s, buf)
        assert status == 400 and headers["connection"] == "close"
        s.close()


def test_many_pipelined_requests_are_all_answered_in_order() -> None:
    # the bytes held back while the queue is full are parsed later, none lost or reordered
    n = 3000
    with Running(LimitsApp(), keep_alive_timeout=5.0) as r, r.connect() as s:
        reqs = b"".join(b"GET /big?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n - 1))
        reqs += post("/echo", b"last" * 3000)  # a body larger than a feed slice
        sender = threading.Thread(target=s.sendall, args=(reqs,))
        sender.start()
        buf = bytearray()
        s.settimeout(10)
        for i in range(n - 1):
            status, headers, body = read_response(s, buf)
            assert status == 200 and headers["x-q"] == str(i) and body == BIG
        status, _, body = read_response(s, buf)
        assert status == 200 and orjson.loads(body)["body"] == "last" * 3000
        sender.join(5)
        assert not buf


def test_pipelined_requests_split_across_slices_and_reads() -> None:
    with Running(LimitsApp()) as r, r.connect() as s:
        one = post("/echo", b"y" * 700)
        s.sendall(one * 40)  # > FEED_SLICE: parsed in slices, some requests straddle two
        buf = bytearray()
        for _ in range(40):
            assert orjson.loads(read_response(s, buf)[2])["body"] == "y" * 700


def timeouts(**kw: Any) -> dict[str, Any]:
    return {"keep_alive_timeout": 5.0, "request_header_timeout": 0.4,
            "request_body_timeout": 0.4, **kw}


def expect_408(s: socket.socket, buf: bytearray | None = None) -> None:
    status, headers, body = read_response(s, bytearray() if buf is None else buf)
    assert status == 408 and headers["connection"] == "close"
    assert headers["x-request-id"].startswith("req_")
    err = orjson.loads(body)["error"]
    assert err["code"] == "request_timeout" and set(err) == {"message", "type", "param",
                                                             "code"}
    assert closed(s)


def trickle(s: socket.socket, data: bytes, every: float, limit: float) -> float:
    """Send `data` a byte at a time until the server answers; the time that took."""
    t0 = time.monotonic()
    for b in data:
        if select.select([s], [], [], every)[0] or time.monotonic() - t0 > limit:
            break
        s.sendall(bytes([b]))
    return time.monotonic() - t0


def test_headers_trickled_byte_by_byte_time_out() -> None:
    # every byte used to reset the idle timer: one byte per interval kept it open forever
    with Running(LimitsApp(), **timeouts()) as r, r.connect() as s:
        took = trickle(s, b"GET /echo HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 100, 0.05, 3)
        assert 0.3 < took < 1.5
        expect_408(s)


@pytest.mark.parametrize("head, first", [
    (b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 65000\r\n\r\n", b"x"),
    (b"POST /body HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n", b"5\r\nhel"),
])
def test_a_stalled_body_times_out(head: bytes, first: bytes) -> None:
    app = LimitsApp()
    with Running(app, **timeouts()) as r, r.connect() as s:
        t0 = time.monotonic()
        s.sendall(head + first)
        expect_408(s)
        assert 0.3 < time.monotonic() - t0 < 2.0
        assert app.disconnects == ["/body"]  # the app was told the client is gone


def test_a_body_trickled_past_its_deadline_times_out() -> None:
    with Running(LimitsApp(), **timeouts()) as r, r.connect() as s:
        s.sendall(b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        took = trickle(s, b"x" * 100, 0.05, 3)
        assert 0.3 < took < 1.5
        expect_408(s)


def test_a_long_response_is_never_cut_by_the_receive_deadlines() -> None:
    # /trickle streams for 0.8 s, twice the deadlines; a pipelined request stalled in its
    # head behind it is answered 408 after the stream, in order
    with Running(LimitsApp(), **timeouts(keep_alive_timeout=0.3)) as r, r.connect() as s:
        s.sendall(b"GET /trickle HTTP/1.1\r\nhost: x\r\n\r\nGET /echo HTTP/1.1\r\nho")
        buf = bytearray()
        status, _, body = read_response(s, buf)
        assert status == 200 and body == b"01234567"
        expect_408(s, buf)


def test_a_request_waiting_its_turn_is_not_timed_out() -> None:
    # reading is paused while a pipelined request waits: its deadline does not run then
    with Running(LimitsApp(), **timeouts()) as r, r.connect() as s:
        s.sendall(b"GET /trickle HTTP/1.1\r\nhost: x\r\n\r\n"
                  b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab")
        time.sleep(0.6)
        s.sendall(b"cd")
        buf = bytearray()
        assert read_response(s, buf)[2] == b"01234567"
        assert read_response(s, buf)[:3:2] == (200, b"ok")


def test_complete_requests_are_not_timed_out() -> None:
    with Running(LimitsApp(), **timeouts()) as r, r.connect() as s:
        buf = bytearray()
        for _ in range(3):
            s.sendall(post("/echo", b"z"))
            assert read_response(s, buf)[0] == 200
            time.sleep(0.5)  # idle between requests: keep-alive's business, not a 408
        s.sendall(b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n")
        time.sleep(0.2)
        s.sendall(b"ok")
        assert read_response(s, buf)[:3:2] == (200, b"ok")


def test_connections_beyond_max_connections_are_closed() -> None:
    with Running(LimitsApp(), max_connections=2) as r:
        a, b = r.connect(), r.connect()
        time.sleep(0.1)
        c = r.connect()
        assert closed(c)
        buf = bytearray()
        for s in (a, b):
            s.sendall(post("/echo", b"1"))
            assert read_response(s, buf)[0] == 200
        assert r.server.refused == 1
        a.close()
        time.sleep(0.2)
        with r.connect() as d:  # a slot is free again
            d.sendall(post("/echo", b"2"))
            assert read_response(d, bytearray())[0] == 200
        b.close()
        c.close()


def test_the_settings_come_from_the_config() -> None:
    cfg = Config.model_validate({"server": {"request_header_timeout": 3,
                                            "request_body_timeout": 7,
                                            "max_connections": 9}})
    app = SimpleNamespace(config=cfg, new_request_id=lambda: "req_x")
    srv = H1Server.for_gateway(app, "127.0.0.1", 0)  # type: ignore[arg-type]
    assert (srv.request_header_timeout, srv.request_body_timeout, srv.max_connections) \
        == (3, 7, 9)
    d = Config().server
    assert (d.request_header_timeout, d.request_body_timeout, d.max_connections) \
        == (10, 30, 4096)
