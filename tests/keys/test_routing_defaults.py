"""A key's routing defaults (`routing: {max_loss: 0.6, sort: ...}`): applied to its requests
through the real gateway, overridden by a request's own controls, validated on creation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.mocks.openai_server import MockOpenAI
from tests.routing.test_strategies_http import STRONG, WEAK, FakePredictor
from tierline.cli import main
from tierline.config import parse_config
from tierline.errors import InvalidRequest
from tierline.gateway.app import create_app
from tierline.gateway.server import GatewayThread
from tierline.keys.store import KeyStore

MASTER = "m" * 40


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayThread]:
    mock = MockOpenAI()
    await mock.start()
    p = {"base_url": mock.url + "/v1", "requires_key": False}
    raw = {
        "server": {"request_log": str(tmp_path / "r.sqlite3")},
        "keys": {"master_key": MASTER, "store": str(tmp_path / "k.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {"up": p},
        "deployments": [
            {"name": "strong", "provider": "up", "model": "a", "profile": STRONG,
             "price": {"input": 10, "output": 30}},
            {"name": "weak", "provider": "up", "model": "b", "profile": WEAK,
             "price": {"input": 0.05, "output": 0.08}},
        ],
    }
    g = GatewayThread(app=create_app(parse_config(raw, "keys"), predictor=FakePredictor()))
    g.start()
    try:
        yield g
    finally:
        await asyncio.to_thread(g.stop)
        await mock.stop()


async def test_a_keys_routing_defaults_apply_and_yield_to_the_request(
    gw: GatewayThread,
) -> None:
    root = gw.base_url.removesuffix("/v1")
    admin = {"authorization": f"Bearer {MASTER}"}
    async with httpx.AsyncClient(base_url=root, timeout=30) as c:
        async def key(spec: dict[str, object]) -> dict[str, str]:
            r = await c.post("/admin/keys", json={"name": "k", **spec}, headers=admin)
            assert r.status_code == 200, r.text
            return {"authorization": f"Bearer {r.json()['key']}"}

        async def ask(auth: dict[str, str], text: str, **ext: object) -> httpx.Response:
            body: dict[str, object] = {"model": "auto",
                                       "messages": [{"role": "user", "content": text}]}
            if ext:
                body["tierline"] = ext
            return await c.post("/v1/chat/completions", json=body, headers=auth)

        plain, thrifty = await key({}), await key({"routing": {"max_loss": 0.6}})
        # "prove it": predicted gain 0.9 - 0.4 = 0.5: strong by default (max_loss 0.12) ...
        assert (await ask(plain, "prove it")).headers["x-tierline-model"] == "strong"
        # ... weak for the key that accepts a loss of 0.6
        r = await ask(thrifty, "prove it")
        assert r.headers["x-tierline-model"] == "weak"
        assert "within 0.6" in r.headers["x-tierline-route"]
        # the request's own knob replaces the key's (not a 400 for two knobs)
        r = await ask(thrifty, "prove it", quality=0.85)
        assert r.status_code == 200 and r.headers["x-tierline-model"] == "strong"
        # a key's sort default
        cheap = await key({"routing": {"sort": "price"}})
        assert (await ask(cheap, "prove it")).headers["x-tierline-model"] == "weak"
        # ... which yields to the request's own strategy or knob (a key's sort used to
        # override them)
        r = await ask(cheap, "prove it", strategy="ordered")
        assert r.headers["x-tierline-route"].startswith("ordered: strong")
        r = await c.post("/v1/chat/completions", headers={**cheap, "x-tierline-strategy":
                                                          "ordered"}, json={
            "model": "auto", "messages": [{"role": "user", "content": "prove it"}]})
        assert r.headers["x-tierline-route"].startswith("ordered: strong")
        best = await key({"routing": {"sort": "quality"}})
        r = await ask(best, "prove it", max_loss=0.6)
        assert "within 0.6" in r.headers["x-tierline-route"]
        assert r.headers["x-tierline-model"] == "weak"
        # invalid defaults: clear 400s naming the field
        for spec, param in (({"max_loss": 2}, "routing.max_loss"),
                            ({"region": "eu"}, "routing.region"),
                            ({"max_loss": 0.1, "quality": 0.8}, "routing.quality")):
            r = await c.post("/admin/keys", json={"name": "bad", "routing": spec},
                             headers=admin)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == param


def test_routing_defaults_round_trip_the_store(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "k.sqlite3")
    rec, _ = s.create("t", routing={"max_loss": 0.2, "sort": "price"})
    s.close()
    s = KeyStore(tmp_path / "k.sqlite3")
    assert dict(s.get(rec.id).routing) == {"max_loss": 0.2, "sort": "price"}
    with pytest.raises(InvalidRequest):
        s.create("t", routing=["max_loss"])
    s.close()


def test_keys_cli_routing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"keys: {{store: {tmp_path / 'k.sqlite3'}}}\n")
    assert main(["keys", "create", "--name", "batch", "--routing", "max_loss=0.25",
                 "--routing", "sort=price", "--config", str(cfg), "--json"]) == 0
    rec = orjson.loads(capsys.readouterr().out)
    assert rec["routing"] == {"max_loss": 0.25, "sort": "price"}
    assert main(["keys", "list", "--config", str(cfg)]) == 0
    assert "routing: max_loss=0.25 sort=price" in capsys.readouterr().out
    assert main(["keys", "create", "--name", "x", "--routing", "max_loss=lots",
                 "--config", str(cfg)]) != 0
    assert "max_loss" in capsys.readouterr().err
