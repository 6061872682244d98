"""Minimal ASGI plumbing: read a bounded body, send JSON, send server-sent events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from tierline.errors import InvalidRequest, PayloadTooLarge, TierlineError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_CT = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientDisconnected(Exception):
    pass


def request_headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers", ()):
        out[k.decode("latin-1").lower()] = v.decode("latin-1")
    return out


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    cl = headers.get("content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise InvalidRequest("invalid content-length header", param=None) from None
        if n > limit:
            raise PayloadTooLarge(f"request body of {n} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientDisconnected()
        body = msg.get("body", b"")
        if body:
            size += len(body)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(body)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def encode_headers(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in extra.items()]


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
                     ) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, obj: Any, extra: dict[str, str] | None = None
                    ) -> None:
    body = orjson.dumps(obj)
    headers = [JSON_CT, (b"content-length", b"%d" % len(body)), *encode_headers(extra or {})]
    await send_bytes(send, status, body, headers)


async def send_error(send: Send, err: TierlineError, extra: dict[str, str] | None = None
                     ) -> None:
    await send_json(send, err.status, err.to_body(), {**(extra or {}), **err.headers})


def sse_event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
