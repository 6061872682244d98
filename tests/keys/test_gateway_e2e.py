"""Keys through the real gateway (skipped until the gateway has `Gateway.keys` wired):
401 without a key, admin-created keys, 403 on models, budgets under concurrent load,
revocation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import gateway_config
from tests.mocks.openai_server import MockOpenAI
from tierline.gateway.server import GatewayThread

MASTER = "m" * 40
MSG = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[tuple[GatewayThread, MockOpenAI]]:
    a, b = MockOpenAI(), MockOpenAI(require_key=True)
    await a.start()
    await b.start()
    cfg = gateway_config(tmp_path, a.url, b.url,
                         keys={"master_key": MASTER, "store": str(tmp_path / "k.sqlite3")})
    g = GatewayThread(cfg)
    if not hasattr(g.app, "keys"):
        await a.stop()
        await b.stop()
        pytest.skip("virtual keys are not wired into the gateway yet")
    g.start()
    try:
        yield g, b
    finally:
        await asyncio.to_thread(g.stop)
        await a.stop()
        await b.stop()


async def test_keys_end_to_end(gw: tuple[GatewayThread, MockOpenAI]) -> None:
    g, _ = gw
    root = g.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=60) as c:
        chat = {"model": "tier:fast", "messages": MSG, "max_tokens": 20}
        r = await c.post("/v1/chat/completions", json=chat)
        assert r.status_code == 401
        r = await c.post("/admin/keys", json={"name": "e2e", "models": ["tier:fast"],
                                              "budget_usd": 0.0001, "period": "day"},
                         headers={"authorization": f"Bearer {MASTER}"})
        assert r.status_code == 200, r.text
        kid, secret = r.json()["id"], r.json()["key"]
        auth = {"authorization": f"Bearer {secret}"}
        assert (await c.get("/v1/models")).status_code == 401
        assert (await c.get("/v1/models", headers=auth)).status_code == 200
        assert (await c.get("/healthz")).status_code == 200

        r = await c.post("/v1/chat/completions", json={**chat, "model": "a/strong"},
                         headers=auth)
        assert r.status_code == 403 and "a/strong" in r.json()["error"]["message"]

        rs = await asyncio.gather(*(c.post("/v1/chat/completions", json=chat, headers=auth)
                                    for _ in range(40)))
        codes = [x.status_code for x in rs]
        assert set(codes) <= {200, 402} and 402 in codes and 200 in codes, codes
        paid = sum(Decimal(x.headers["x-tierline-cost-usd"]) for x in rs
                   if x.status_code == 200)
        assert paid <= Decimal("0.0001")
        refused = next(x for x in rs if x.status_code == 402)
        assert refused.headers["x-should-retry"] == "false"
        assert "budget" in refused.json()["error"]["message"]
        rec = g.app.keys.store.get(kid)  # type: ignore[attr-defined]
        assert g.app.keys.budgets.spent(rec) <= 10**8  # type: ignore[attr-defined]

        r = await c.delete(f"/admin/keys/{kid}", headers={"authorization": f"Bearer {MASTER}"})
        assert r.status_code == 200
        r = await c.post("/v1/chat/completions", json=chat, headers=auth)
        assert r.status_code == 401 and secret not in r.text


async def test_tpm_counts_the_output_a_request_really_used(
        gw: tuple[GatewayThread, MockOpenAI]) -> None:
    """Requests without max_tokens: the window is trued up to the upstream's usage, so a
    key's TPM holds even when the client never says how long the answer may be."""
    g, b = gw
    root = g.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=60) as c:
        r = await c.post("/admin/keys", json={"name": "tpm", "tpm": 1000},
                         headers={"authorization": f"Bearer {MASTER}"})
        auth = {"authorization": f"Bearer {r.json()['key']}"}
        b.script(prompt_tokens=10, completion_tokens=1500)
        r = await c.post("/v1/chat/completions", headers=auth,
                         json={"model": "b/fast", "messages": MSG})
        assert r.status_code == 200, r.text
        r = await c.post("/v1/chat/completions", headers=auth,
                         json={"model": "b/fast", "messages": MSG})
        assert r.status_code == 429, r.text
        assert "tokens per minute" in r.json()["error"]["message"]


async def test_budget_hold_counts_every_choice(gw: tuple[GatewayThread, MockOpenAI]) -> None:
    """`n` choices are billed n times the output: the worst-case hold too."""
    g, _ = gw
    root = g.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=60) as c:
        r = await c.post("/admin/keys", json={"name": "n", "budget_usd": 0.0001,
                                              "period": "total"},
                         headers={"authorization": f"Bearer {MASTER}"})
        auth = {"authorization": f"Bearer {r.json()['key']}"}
        body = {"model": "b/fast", "messages": MSG, "max_tokens": 100}
        r = await c.post("/v1/chat/completions", headers=auth, json={**body, "n": 2})
        assert r.status_code == 402, r.text
        r = await c.post("/v1/chat/completions", headers=auth, json=body)
        assert r.status_code == 200, r.text


async def test_a_restricted_key_sees_only_what_it_may_use(
        gw: tuple[GatewayThread, MockOpenAI]) -> None:
    g, _ = gw
    root = g.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=60) as c:
        r = await c.post("/admin/keys", json={"name": "fast-only", "models": ["tier:fast"]},
                         headers={"authorization": f"Bearer {MASTER}"})
        auth = {"authorization": f"Bearer {r.json()['key']}"}
        ids = {m["id"] for m in (await c.get("/v1/models", headers=auth)).json()["data"]}
        assert ids == {"b/fast", "tier:fast"}, ids
        deps = (await c.get("/v1/deployments", headers=auth)).json()["data"]
        assert [d["name"] for d in deps] == ["b/fast"]
        assert (await c.get("/v1/models/a/strong", headers=auth)).status_code == 404
        assert (await c.get("/v1/models/b/fast", headers=auth)).status_code == 200
        master = {"authorization": f"Bearer {MASTER}"}
        everything = {m["id"] for m in (await c.get("/v1/models", headers=master)).json()[
            "data"]}
        assert {"a/strong", "b/fast", "auto", "pair"} <= everything


async def test_tpm_admission_counts_every_choice(gw: tuple[GatewayThread, MockOpenAI]) -> None:
    g, _ = gw
    root = g.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=60) as c:
        r = await c.post("/admin/keys", json={"name": "tpm-n", "tpm": 1000},
                         headers={"authorization": f"Bearer {MASTER}"})
        auth = {"authorization": f"Bearer {r.json()['key']}"}
        body = {"model": "b/fast", "messages": MSG, "max_tokens": 400}
        r = await c.post("/v1/chat/completions", headers=auth, json={**body, "n": 3})
        assert r.status_code == 429 and "lower max_tokens" in r.json()["error"]["message"]
        r = await c.post("/v1/chat/completions", headers=auth, json=body)
        assert r.status_code == 200, r.text
