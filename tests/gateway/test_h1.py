"""tierline's HTTP/1.1 server (gateway/h1.py, h1server.py) on a real loopback socket."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tierline.gateway.h1 import Cycle, H1Connection
from tierline.gateway.h1server import H1Server, new_loop


class EchoApp:
    """A small ASGI app: echoes the request; /stream streams; /boom fails; /slow waits."""

    def __init__(self) -> None:
        self.started = self.stopped = False
        self.finished: list[str] = []

    async def startup(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.stopped = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/boom":
            raise ValueError("secret internals")
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if path == "/slow":
            await asyncio.sleep(0.3)
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(3):
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % i,
                            "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.finished.append(path)
            return
        out = orjson.dumps({"method": scope["method"], "path": path,
                            "query": scope["query_string"].decode(), "body": body.decode(),
                            "client": scope["client"][0]})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"%d" % len(out))]})
        await send({"type": "http.response.body", "body": out})
        self.finished.append(path)


class Running:
    def __init__(self, app: EchoApp, **kw: Any) -> None:
        self.app = app
        self.server = H1Server(app, "127.0.0.1", 0, **kw)  # type: ignore[arg-type]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.server.port = s.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=new_loop) as r:
            r.run(self.server.serve())

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *a: object) -> None:
        self.server.request_exit()
        self.thread.join(10)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        return s


@pytest.fixture
def srv() -> Iterator[Running]:
    with Running(EchoApp(), keep_alive_timeout=0.5) as r:
        yield r


def read_response(s: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from `s` (content-length or chunked); leftovers stay in buf."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        assert k.lower() not in headers, f"duplicate header {k}"
        headers[k.lower()] = v.strip()
    buf[:] = rest
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            buf += s.recv(65536)
        body = bytes(buf[:n])
        del buf[:n]
        return status, headers, body
    assert headers.get("transfer-encoding") == "chunked"
    body = b""
    while True:
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        size_line, _, _ = bytes(buf).partition(b"\r\n")
        size = int(size_line, 16)
        while len(buf) < len(size_line) + 2 + size + 2:
            buf += s.recv(65536)
        body += bytes(buf[len(size_line) + 2:len(size_line) + 2 + size])
        del buf[:len(size_line) + 2 + size + 2]
        if size == 0:
            return status, headers, body


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body))


def closed(s: socket.socket) -> bool:
    s.settimeout(2)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_and_one_content_length(srv: Running) -> None:
    with srv.connect() as s:
        buf = bytearray()
        for i in range(3):
            s.sendall(post(f"/echo?i={i}", b'{"n": %d}' % i))
            status, headers, body = read_response(s, buf)
            assert status == 200 and headers["content-type"] == "application/json"
            got = orjson.loads(body)
            assert got["query"] == f"i={i}" and got["body"] == f'{{"n": {i}}}'
            assert got["client"] == "127.0.0.1"
    assert srv.app.started


def test_pipelined_requests_are_answered_in_order(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(post("/slow", b"first") + post("/echo", b"second") + post("/echo", b"third"))
        buf = bytearray()
        bodies = [orjson.loads(read_response(s, buf)[2])["body"] for _ in range(3)]
    assert bodies == ["first", "second", "third"]


def test_streamed_response_is_chunked(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(post("/stream", b"{}"))
        status, headers, body = read_response(s, bytearray())
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_chunked_request_body(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        _, _, body = read_response(s, bytearray())
    assert orjson.loads(body)["body"] == "hello world"


def test_expect_100_continue(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n"
                  b"expect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"body")
        _, _, body = read_response(s, bytearray())
    assert orjson.loads(body)["body"] == "body"


def test_http_1_0_closes_after_the_response(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
        status, headers, _ = read_response(s, bytearray())
        assert status == 200 and headers["connection"] == "close"
        assert closed(s)


def test_head_has_no_body(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"HEAD /echo HTTP/1.1\r\nhost: x\r\n\r\n")
        s.settimeout(2)
        data = s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n")
        assert b"content-length: " in data
        # the connection stays usable: the next response is not polluted by a body
        s.sendall(post("/echo", b"x"))
        _, _, body = read_response(s, bytearray())
    assert orjson.loads(body)["body"] == "x"


@pytest.mark.parametrize("raw, status, code", [
    (b"NOT HTTP AT ALL\r\n\r\n", 400, "invalid_http"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 414, "url_too_long"),
    (b"GET / HTTP/1.1\r\n" + b"x-big: " + b"b" * 70000 + b"\r\n\r\n", 431,
     "headers_too_large"),
])
def test_protocol_errors_get_openai_shaped_json_and_a_close(
        srv: Running, raw: bytes, status: int, code: str) -> None:
    with srv.connect() as s:
        s.sendall(raw)
        got, headers, body = read_response(s, bytearray())
        assert got == status and headers["connection"] == "close"
        assert headers["x-request-id"].startswith("req_")
        err = orjson.loads(body)["error"]
        assert err["code"] == code and set(err) == {"message", "type", "param", "code"}
        assert closed(s)


def test_an_upgrade_request_is_answered_as_plain_http_then_closed(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\n"
                  b"upgrade: websocket\r\n\r\n")
        status, headers, _ = read_response(s, bytearray())
        assert status == 200 and headers["connection"] == "close"
        assert closed(s)


def test_an_app_crash_is_a_bare_500(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(post("/boom", b"{}"))
        status, headers, body = read_response(s, bytearray())
    assert status == 500 and b"secret" not in body
    assert headers["x-request-id"].startswith("req_")
    assert orjson.loads(body)["error"]["code"] == "internal_error"


def test_idle_connections_are_closed(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(post("/echo", b"x"))
        read_response(s, bytearray())
        t0 = time.monotonic()
        assert closed(s)  # keep_alive_timeout=0.5 s, swept every 0.25 s
        assert time.monotonic() - t0 < 1.9


def test_graceful_stop_finishes_requests_in_flight() -> None:
    app = EchoApp()
    r = Running(app).__enter__()
    with r.connect() as s:
        s.sendall(post("/slow", b"late"))
        time.sleep(0.05)
        threading.Thread(target=r.server.request_exit).start()
        status, _, body = read_response(s, bytearray())
        assert status == 200 and orjson.loads(body)["body"] == "late"
    r.thread.join(10)
    assert not r.thread.is_alive() and app.stopped


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


async def test_status_line_and_headers_leave_with_the_first_body_part() -> None:
    conn = H1Connection.__new__(H1Connection)
    conn.transport = FakeTransport()  # type: ignore[assignment]
    conn.closing = False
    conn.write_paused = False
    scope = {"method": "POST", "path": "/"}
    c = Cycle(conn, scope, True, False)
    c.more_body = False
    await c.send({"type": "http.response.start", "status": 200,
                  "headers": [(b"content-length", b"2")]})
    await c.send({"type": "http.response.body", "body": b"{}"})
    writes = conn.transport.writes  # type: ignore[attr-defined]
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


@pytest.mark.parametrize("bad", [b"a\r\nx-evil: 1", b"a\nb", b"a\rb", b"a\0b"])
async def test_response_splitting_is_refused(bad: bytes) -> None:
    conn = H1Connection.__new__(H1Connection)
    conn.transport = FakeTransport()  # type: ignore[assignment]
    conn.closing = False
    conn.write_paused = False
    c = Cycle(conn, {"method": "GET", "path": "/"}, True, False)
    c.more_body = False
    with pytest.raises(RuntimeError, match="invalid character"):
        await c.send({"type": "http.response.start", "status": 200,
                      "headers": [(b"x-route", bad)]})


@pytest.mark.parametrize("http", ["tierline", "uvicorn"])
async def test_the_gateway_runs_on_either_server(
        http: str, fresh_mocks: Any, tmp_path: Any) -> None:
    import httpx

    from tests.gateway.conftest import gateway_config
    from tierline.gateway.server import GatewayThread

    a, b = fresh_mocks
    cfg = gateway_config(tmp_path, a.url, b.url, server={"http": http})
    with GatewayThread(cfg) as g:
        async with httpx.AsyncClient(base_url=g.base_url, timeout=30) as c:
            r = await c.post("/chat/completions", json={
                "model": "b/fast", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": "Bearer x"})
            assert r.status_code == 200, r.text
            assert r.headers["x-tierline-model"] == "b/fast"
            async with c.stream("POST", "/chat/completions", json={
                    "model": "b/fast", "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}) as s:
                text = "".join([line async for line in s.aiter_lines()])
            assert s.status_code == 200 and text.endswith("data: [DONE]")
            # a client that gives up cancels the upstream call, on either server (tierline's
            # cancels the request task itself; on uvicorn a receive() watcher does it)
            b.script(latency=3.0)
            t0 = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await c.post("/chat/completions", timeout=0.4, json={
                    "model": "b/fast", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": "Bearer x"})
            rows = await _wait_for_499(cfg.request_log_path())
            assert rows and rows[0] < 2000, rows
            assert time.monotonic() - t0 < 2.5


async def _wait_for_499(path: Any) -> list[float]:
    import asyncio
    import sqlite3

    for _ in range(60):
        conn = sqlite3.connect(path)
        rows = [r[0] for r in conn.execute(
            "SELECT latency_ms FROM requests WHERE status = 499")]
        conn.close()
        if rows:
            return rows
        await asyncio.sleep(0.05)
    return []


def test_a_client_stuck_in_its_headers_is_closed(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-")  # and nothing more
        t0 = time.monotonic()
        assert closed(s)
        assert time.monotonic() - t0 < 1.9


def test_a_long_response_is_not_cut_by_the_idle_sweeper() -> None:
    with Running(EchoApp(), keep_alive_timeout=0.1) as r, r.connect() as s:
        s.sendall(post("/slow", b"x"))  # the app works 0.3 s > keep_alive_timeout
        status, _, body = read_response(s, bytearray())
    assert status == 200 and orjson.loads(body)["body"] == "x"


def read_until_closed(s: socket.socket) -> bytes:
    s.settimeout(5)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


@pytest.mark.parametrize("first", [
    b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
    post("/slow", b"first"),  # still in flight when the garbage is parsed
])
def test_a_malformed_pipelined_request_is_answered_after_the_valid_one(
        srv: Running, first: bytes) -> None:
    with srv.connect() as s:
        s.sendall(first + b"GARBAGE\r\n\r\n")
        buf = bytearray()
        status, headers, _ = read_response(s, buf)
        assert status == 200 and "connection" not in headers
        status, headers, body = read_response(s, buf)
        assert status == 400 and headers["connection"] == "close"
        assert headers["x-request-id"].startswith("req_")
        assert orjson.loads(body)["error"]["code"] == "invalid_http"
        assert not buf and closed(s)


def test_a_body_longer_than_its_content_length(srv: Running) -> None:
    # the extra bytes are parsed as a next request, which is malformed
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\n"
                  b'{"a": 1, "b": 2}')
        buf = bytearray()
        status, _, body = read_response(s, buf)
        assert status == 200 and orjson.loads(body)["body"] == '{"a": '
        status, headers, body = read_response(s, buf)
        assert status == 400 and headers["connection"] == "close"
        assert orjson.loads(body)["error"]["code"] == "invalid_http"
        assert not buf and closed(s)


def test_errors_after_a_pipelined_request_are_answered_in_order(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(post("/slow", b"1") + post("/echo", b"2") + b"GET /" + b"a" * 9000)
        buf = bytearray()
        assert orjson.loads(read_response(s, buf)[2])["body"] == "1"
        assert orjson.loads(read_response(s, buf)[2])["body"] == "2"
        status, headers, _ = read_response(s, buf)
        assert status == 414 and headers["connection"] == "close"
        assert not buf and closed(s)


def test_a_malformed_chunked_body_gets_a_400(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\nzz\r\n")
        status, headers, body = read_response(s, bytearray())
        assert status == 400 and headers["connection"] == "close"
        assert orjson.loads(body)["error"]["code"] == "invalid_http"
        assert closed(s)


def test_a_malformed_chunked_body_of_a_queued_request(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(post("/slow", b"1") + b"POST /echo HTTP/1.1\r\nhost: x\r\n"
                  b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
        buf = bytearray()
        assert orjson.loads(read_response(s, buf)[2])["body"] == "1"
        status, headers, _ = read_response(s, buf)
        assert status == 400 and headers["connection"] == "close"
        assert not buf and closed(s)
    assert srv.app.finished == ["/slow"]


@pytest.mark.parametrize("keep_alive", [b"", b"connection: keep-alive\r\n"])
def test_a_stream_to_an_http_1_0_client_is_unframed_then_closed(
        srv: Running, keep_alive: bytes) -> None:
    with srv.connect() as s:
        s.sendall(b"POST /stream HTTP/1.0\r\ncontent-length: 2\r\n%s\r\n{}" % keep_alive)
        raw = read_until_closed(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 200 ok"
    assert "connection: close" in lines
    assert not any(h.startswith(("transfer-encoding", "content-length")) for h in lines)
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_protocol_error_ids_come_from_the_app_when_it_makes_them() -> None:
    class IdApp(EchoApp):
        def new_request_id(self) -> str:
            return "req_from_the_app"

    with Running(IdApp()) as r, r.connect() as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        _, headers, _ = read_response(s, bytearray())
    assert headers["x-request-id"] == "req_from_the_app"
