"""The request log reconciles with the responses: one row per request, exact costs; the
endpoints /v1/models, /healthz, /metrics; `tierline spend`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.mocks.openai_server import MockOpenAI
from tierline.accounting.pricing import PICO_PER_USD
from tierline.cli import main
from tierline.gateway.server import GatewayThread

MSG = [{"role": "user", "content": "count"}]


def log_path(gw: GatewayThread) -> Path:
    return gw.app.config.request_log_path()


async def wait_rows(path: Path, ids: set[str]) -> dict[str, sqlite3.Row]:
    deadline = time.monotonic() + 10
    while True:
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        rows = {r["id"]: r for r in conn.execute("SELECT * FROM requests")}
        conn.close()
        if ids <= set(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_request_log_reconciles(gateway: GatewayThread, client: httpx.AsyncClient,
                                      fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, b = fresh_mocks
    header_costs: dict[str, Decimal] = {}
    usage_by_id: dict[str, tuple[int, int]] = {}
    for i in range(12):
        (a if i % 2 == 0 else b).script(prompt_tokens=100 + i, completion_tokens=10 + i)
        model = "a/strong" if i % 2 == 0 else "b/fast"
        r = await client.post("/chat/completions", json={"model": model, "messages": MSG})
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        header_costs[rid] = Decimal(r.headers["x-tierline-cost-usd"])
        u = r.json()["usage"]
        usage_by_id[rid] = (u["prompt_tokens"], u["completion_tokens"])
    # streamed requests too, without include_usage: usage is still recorded
    a.script(prompt_tokens=77, completion_tokens=3, chunks=3)
    async with client.stream("POST", "/chat/completions", json={
            "model": "a/strong", "messages": MSG, "stream": True}) as r:
        stream_id = r.headers["x-request-id"]
        _ = [x async for x in r.aiter_lines()]
    bad = await client.post("/chat/completions", json={"model": "nope", "messages": MSG})
    bad_id = bad.headers["x-request-id"]
    rows = await wait_rows(log_path(gateway), {*header_costs, stream_id, bad_id})
    for rid, c in header_costs.items():
        row = rows[rid]
        assert Decimal(row["cost_pico"]) / PICO_PER_USD == c
        assert (row["prompt_tokens"], row["completion_tokens"]) == usage_by_id[rid]
        assert row["status"] == 200 and row["estimated"] == 0
        assert row["prompt"] is None  # prompt logging is off by default
    srow = rows[stream_id]
    assert (srow["prompt_tokens"], srow["completion_tokens"], srow["stream"]) == (77, 3, 1)
    assert srow["cost_pico"] == 77 * 2_500_000 + 3 * 10_000_000
    assert rows[bad_id]["status"] == 404 and rows[bad_id]["error"]
    assert json.loads(rows[stream_id]["route_detail"])["chain"] == ["a/strong"]


async def test_models_health_metrics(gateway: GatewayThread, client: httpx.AsyncClient
                                     ) -> None:
    r = await client.get("/models")
    ids = {m["id"] for m in r.json()["data"]}
    assert {"a/strong", "b/fast", "local/smollm2-135m-instruct", "auto", "tier:fast",
            "pair"} <= ids
    strong = next(m for m in r.json()["data"] if m["id"] == "a/strong")
    assert strong["tierline"]["price_per_mtok"]["input"] == 2.5
    assert strong["tierline"]["region"] == "us"
    # the SDKs' models.retrieve: ids with a slash, tiers, unknown ids
    sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused")
    assert (await sdk.models.retrieve("a/strong")).id == "a/strong"
    assert (await client.get("/models/tier:fast")).json()["tierline"]["kind"] == "route"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("nope/x")
    await sdk.close()
    h = await client.get(gateway.root_url + "/healthz")
    assert h.json()["status"] == "ok"
    await client.post("/chat/completions", json={"model": "a/strong", "messages": MSG})
    m = (await client.get(gateway.root_url + "/metrics")).text
    for name in ("tierline_requests_total", "tierline_request_latency_seconds_bucket",
                 "tierline_tokens_total", "tierline_cost_usd_total", "tierline_errors_total",
                 "tierline_deployment_healthy"):
        assert name in m
    assert 'tierline_requests_total{model="a/strong",provider="mocka",status="200"}' in m
    d = await client.get("/deployments")
    assert {x["name"] for x in d.json()["data"]} >= {"a/strong", "b/fast"}


async def test_spend_cli(gateway: GatewayThread, client: httpx.AsyncClient,
                         capsys: pytest.CaptureFixture[str]) -> None:
    r = await client.post("/chat/completions", json={"model": "b/fast", "messages": MSG})
    await wait_rows(log_path(gateway), {r.headers["x-request-id"]})
    assert main(["spend", "--log", str(log_path(gateway)), "--by", "provider", "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    by = {row["provider"]: row for row in out["rows"]}
    assert by["mockb"]["requests"] >= 1
    conn = sqlite3.connect(log_path(gateway))
    total = conn.execute("SELECT SUM(cost_pico) FROM requests").fetchone()[0]
    conn.close()
    assert Decimal(out["total_cost_usd"]) == Decimal(total) / PICO_PER_USD
    assert main(["spend", "--log", str(log_path(gateway)), "--by", "day"]) == 0


async def test_prompt_text_quoted_by_an_upstream_stays_out_of_the_log(
        gateway: GatewayThread, client: httpx.AsyncClient,
        fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    a, _ = fresh_mocks
    secret = "my private diagnosis is XYZZY"
    a.script(status=400, error_message=f"Invalid content: '{secret}'")
    r = await client.post("/chat/completions", json={
        "model": "a/strong", "messages": [{"role": "user", "content": secret}]})
    assert r.status_code == 400 and secret in r.json()["error"]["message"]  # the client's own
    rows = await wait_rows(log_path(gateway), {r.headers["x-request-id"]})
    row = rows[r.headers["x-request-id"]]
    assert row["error"] and "XYZZY" not in row["error"]
    assert "XYZZY" not in (row["route_detail"] or "") and row["prompt"] is None


@pytest.mark.parametrize("stream", [False, True])
async def test_estimated_usage_counts_tool_calls(client: httpx.AsyncClient,
                                                 fresh_mocks: tuple[MockOpenAI, MockOpenAI],
                                                 stream: bool) -> None:
    """An upstream that reports no usage: the estimate counts what was generated, tool
    calls included (an answer that was only a tool call was estimated at 0 tokens)."""
    a, _ = fresh_mocks
    a.script(text=None, tool_calls=[("lookup", {"query": "x" * 400})], usage=False)
    body = {"model": "a/strong", "messages": MSG, "stream": stream,
            "tools": [{"type": "function", "function": {"name": "lookup"}}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
        async with client.stream("POST", "/chat/completions", json=body) as r:
            lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: {")]
        usage = orjson.loads(lines[-1][6:])["usage"]
    else:
        r = await client.post("/chat/completions", json=body)
        assert r.headers["x-tierline-cost-estimated"] == "true"
        usage = r.json()["usage"]
    assert usage["completion_tokens"] >= 50


async def test_a_stream_broken_mid_way_still_reports_its_cost(
        client: httpx.AsyncClient, fresh_mocks: tuple[MockOpenAI, MockOpenAI]) -> None:
    """Too late to fail over: the client gets the error event and, having asked for usage,
    the usage chunk with what the partial answer cost (estimated: the upstream sent none)."""
    a, _ = fresh_mocks
    a.script(text="one two three four five six", chunks=6, stream_error="error_object",
             error_after=3)
    async with client.stream("POST", "/chat/completions", json={
            "model": "a/strong", "messages": MSG, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        events = [orjson.loads(ln[6:]) async for ln in r.aiter_lines()
                  if ln.startswith("data: {")]
    assert "error" in events[-2]
    usage = events[-1]["usage"]
    assert usage["estimated"] is True and usage["completion_tokens"] > 0
    assert Decimal(usage["cost_usd"]) > 0


@pytest.mark.parametrize("bad", [-1000, 10**19, 2.5, True])
async def test_implausible_upstream_token_counts_are_not_trusted(
        client: httpx.AsyncClient, fresh_mocks: tuple[MockOpenAI, MockOpenAI],
        bad: object) -> None:
    """Negative, absurd (1e19 killed the request-log writer), float, boolean counts:
    the gateway counts for itself."""
    a, _ = fresh_mocks
    a.script(prompt_tokens=bad)
    r = await client.post("/chat/completions", json={"model": "a/strong", "messages": MSG})
    assert r.status_code == 200
    assert Decimal(r.headers["x-tierline-cost-usd"]) > 0
    assert r.headers["x-tierline-cost-estimated"] == "true"


def test_a_hedge_loser_is_no_health_failure() -> None:
    from tierline.gateway.chat import _health_failure
    from tierline.resilience.executor import Attempt

    assert not _health_failure(Attempt("d", "hedge: lost the race, cancelled",
                                       "HedgeCancelled"))
    assert _health_failure(Attempt("d", "UpstreamTimeout from d", "UpstreamTimeout"))
    assert not _health_failure(Attempt("d", "bad request", "UpstreamStatusError", 400))
