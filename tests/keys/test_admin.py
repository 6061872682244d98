"""The admin API over real HTTP: uvicorn on 127.0.0.1 serving `handle_admin`."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tierline.config import Config
from tierline.keys.admin import handle_admin
from tierline.keys.auth import KeyAuth

from .conftest import make_config

MASTER = "master-" + "s" * 32


class AdminApp:
    """The smallest ASGI app around the admin handler (no gateway needed)."""

    def __init__(self, auth: KeyAuth) -> None:
        self.auth = auth

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        elif scope["type"] == "http":
            await handle_admin(self.auth, scope, receive, send)


class Server:
    def __init__(self, config: Config) -> None:
        self.auth = KeyAuth(config)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(
            AdminApp(self.auth), host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="on"))
        setattr(self._server, "install_signal_handlers", lambda: None)  # noqa: B010
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()),
                                        daemon=True)
        self._thread.start()
        while not self._server.started:
            assert self._thread.is_alive(), "admin server did not start"
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        asyncio.run(self.auth.close())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(make_config(tmp_path, master_key=MASTER))
    yield s
    s.stop()


def client(s: Server, key: str | None = MASTER) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=s.url, headers=headers, timeout=30)


def test_create_list_get_revoke(server: Server, tmp_path: Path) -> None:
    with client(server) as c:
        r = c.post("/admin/keys", json={"name": "team-a", "models": ["tier:small"],
                                        "budget_usd": 10, "period": "month", "rpm": 60,
                                        "region": "eu", "zdr": True})
        assert r.status_code == 200, r.text
        created = r.json()
        secret = created["key"]
        assert secret.startswith("tl-") and created["id"].startswith("key_")
        assert created["models"] == ["tier:small"] and created["budget_usd"] == 10
        assert created["spent_usd"] == "0" and r.headers["cache-control"] == "no-store"
        kid = created["id"]
        # the new key works at once on the gateway's hot path
        assert server.auth.authenticate({"authorization": f"Bearer {secret}"}) is not None

        listed = c.get("/admin/keys").json()
        assert listed["object"] == "list" and [k["id"] for k in listed["data"]] == [kid]
        assert secret not in str(listed) and "hash" not in listed["data"][0]

        got = c.get(f"/admin/keys/{kid}")
        assert got.status_code == 200 and got.json()["name"] == "team-a"
        assert "key" not in got.json()

        d = c.delete(f"/admin/keys/{kid}")
        assert d.status_code == 200 and d.json()["revoked"] is True
        assert server.auth.store is not None
        assert server.auth.store.authenticate(secret) is None

        assert c.get("/admin/keys/key_missing").status_code == 404
        assert c.delete("/admin/keys/key_missing").status_code == 404
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in blob


def test_auth_required(server: Server) -> None:
    for key in (None, "wrong", "tl-" + "x" * 43):
        with client(server, key) as c:
            r = c.get("/admin/keys")
            assert r.status_code == 401
            assert r.json()["error"]["type"] == "authentication_error"
            if key:
                assert key not in r.text
            assert c.post("/admin/keys", json={"name": "x"}).status_code == 401


@pytest.mark.parametrize(("body", "param"), [
    ({}, "name"), ({"name": ""}, "name"), ({"name": "x", "rpm": "ten"}, "rpm"),
    ({"name": "x", "budget_usd": -5}, "budget_usd"), ({"name": "x", "period": "week"}, "period"),
    ({"name": "x", "colour": "red"}, "colour"), ({"name": "x", "models": "a,,b"}, None),
])
def test_bad_bodies_name_the_field(server: Server, body: dict[str, Any],
                                   param: str | None) -> None:
    with client(server) as c:
        r = c.post("/admin/keys", json=body)
        if param is None:  # "a,,b" is read as the list [a, b]
            assert r.status_code == 200 and r.json()["models"] == ["a", "b"]
            return
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error"


def test_bad_json_and_methods(server: Server) -> None:
    with client(server) as c:
        r = c.post("/admin/keys", content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        assert c.post("/admin/keys", json=[1]).status_code == 400
        r = c.put("/admin/keys")
        assert r.status_code == 405 and "POST" in r.headers["allow"]
        assert c.post("/admin/keys/key_x").status_code == 405
        assert c.get("/admin/keys/a/b").status_code == 404


def test_no_master_key_means_no_admin_api(tmp_path: Path) -> None:
    s = Server(make_config(tmp_path))
    try:
        with client(s, "anything") as c:
            assert c.get("/admin/keys").status_code == 404
            assert c.post("/admin/keys", json={"name": "x"}).status_code == 404
    finally:
        s.stop()
