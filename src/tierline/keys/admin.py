"""The admin API for virtual keys, guarded by the master key:

    POST   /admin/keys          create (JSON body: name + settings) -> record + the secret
    GET    /admin/keys          list
    GET    /admin/keys/{id}     one key, with its current-period spend
    DELETE /admin/keys/{id}     revoke

404 everywhere when no master key is configured; 401 without the right one. The secret is
returned once, by create; hashes are never returned.
"""

from __future__ import annotations

from typing import Any

import orjson

from tierline.accounting.pricing import usd
from tierline.errors import AuthenticationError, InvalidRequest, TierlineError
from tierline.gateway.asgi import (
    Receive,
    Scope,
    Send,
    read_body,
    request_headers,
    send_error,
    send_json,
)
from tierline.keys.auth import KeyAuth, bearer
from tierline.keys.store import KeyRecord, KeyStore

PREFIX = "/admin/keys"
MAX_BODY = 64 * 1024


def _error(status: int, message: str, code: str) -> TierlineError:
    err = InvalidRequest(message, code=code)
    err.status = status
    return err


def _view(auth: KeyAuth, rec: KeyRecord) -> dict[str, Any]:
    d = rec.public()
    d["object"] = "api_key"
    if rec.budget_usd is not None:
        spent = auth.budgets.spent(rec)
        d["spent_usd"] = usd(spent)
        d["reserved_usd"] = usd(auth.budgets.held(rec))
    return d


def parse_create(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The name and settings of a key to create, from a JSON body (400 naming the field)."""
    try:
        obj = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf") or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise InvalidRequest("the body must be a JSON object")
    name = obj.pop("name", None)
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("name is required (a non-empty string)", param="name")
    return name, obj


async def handle_admin(auth: KeyAuth, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        await _dispatch(auth, scope, receive, send)
    except TierlineError as e:
        await send_error(send, e)


async def _dispatch(auth: KeyAuth, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"].rstrip("/")
    method: str = scope["method"]
    if not auth.master_key or not (path == PREFIX or path.startswith(PREFIX + "/")):
        raise _error(404, f"unknown path {scope['path']!r}", "not_found")
    headers = request_headers(scope)
    if not auth.is_master(bearer(headers)):
        raise AuthenticationError("the admin API needs `Authorization: Bearer <master key>`")
    store = auth.store
    if store is None:  # a master key always opens a store; defensive
        raise _error(404, "no key store", "not_found")
    if path == PREFIX:
        if method == "POST":
            await _create(auth, store, receive, send, headers)
        elif method in ("GET", "HEAD"):
            await send_json(send, 200, {"object": "list",
                                        "data": [_view(auth, r) for r in store.list()]})
        else:
            raise _method(["GET", "POST"])
        return
    key_id = path[len(PREFIX) + 1:]
    if "/" in key_id:
        raise _error(404, f"unknown path {scope['path']!r}", "not_found")
    if method in ("GET", "HEAD"):
        rec = store.get(key_id)
    elif method == "DELETE":
        rec = store.revoke(key_id)
        if rec is not None:
            auth.limits.forget(key_id)
    else:
        raise _method(["GET", "DELETE"])
    if rec is None:
        raise _error(404, f"no API key with id {key_id!r}", "key_not_found")
    await send_json(send, 200, _view(auth, rec))


def _method(allowed: list[str]) -> TierlineError:
    err = _error(405, f"method not allowed; use {' or '.join(allowed)}", "method_not_allowed")
    err.headers["allow"] = ", ".join(allowed)
    return err


async def _create(auth: KeyAuth, store: KeyStore, receive: Receive, send: Send,
                  headers: dict[str, str]) -> None:
    raw = await read_body(receive, headers, MAX_BODY)
    name, spec = parse_create(raw)
    rec, secret = store.create(name, **spec)
    body = _view(auth, rec)
    body["key"] = secret
    await send_json(send, 200, body, {"cache-control": "no-store"})
