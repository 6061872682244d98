"""A real bench against the in-process gateway serving the embedded model (real tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.mock_upstream import BenchMock
from tierline.bench.runner import BenchOptions, run_bench
from tierline.bench.workload import Item

MODEL = "local/smollm2-135m-instruct"


async def test_embedded_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TIERLINE_CONFIG", raising=False)
    items = [Item(id=f"q{i}", request={"messages": [{"role": "user", "content": q}],
                                       "max_tokens": 12, "temperature": 0},
                  checks=[{"type": "regex", "pattern": "."}])
             for i, q in enumerate(["What is the capital of France?", "Say hello."])]
    s = await run_bench(BenchOptions(items=items, targets=[MODEL], out=tmp_path / "run",
                                     progress=False, plots=False))
    t = s["targets"][MODEL]
    assert t["n"] == 2 and t["errors"] == 0, t["errors_by_class"]
    assert t["completion_tokens_total"] > 0 and t["prompt_tokens_total"] > 0
    assert t["ttft_ms"]["p50"] > 0 and t["e2e_ms"]["p50"] >= t["ttft_ms"]["p50"]
    assert t["cost_source"] == ["reported"]
    assert t["routes"].get(MODEL) == 2
    assert (tmp_path / "data" / "requests.sqlite3").exists()


async def test_policy_targets_through_the_gateway(tmp_path: Path, mock: BenchMock) -> None:
    """`auto?quality=...` and `tier:X` targets served by the in-process gateway: the route
    taken is recorded per request, and costs come from the gateway's usage chunks."""
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"""
server: {{request_log: "{tmp_path / 'log.sqlite3'}"}}
catalog: {{builtin: false}}
providers:
  m: {{base_url: "{mock.url}/v1", requires_key: false}}
deployments:
  - {{name: m/strong, provider: m, model: s, price: {{input: 10, output: 30}},
     tier: strong, profile: gpt-4-1106-preview}}
  - {{name: m/weak, provider: m, model: w, price: {{input: 0.5, output: 1.5}},
     tier: fast, profile: mixtral-8x7b-instruct-v0.1}}
""")
    items = [Item(id=f"q{i}", request={"messages": [{"role": "user", "content": p}],
                                       "max_tokens": 16},
                  checks=[{"type": "contains", "value": "Paris"}])
             for i, p in enumerate(["capital of France?", "capital of France, please"])]
    targets = ["auto?quality=0.99", "auto?quality=0.01", "tier:fast"]
    s = await run_bench(BenchOptions(items=items, targets=targets, out=tmp_path / "run",
                                     config=str(cfg), progress=False, plots=False))
    got = {t: s["targets"][t]["routes"] for t in targets}
    assert got["auto?quality=0.99"] == {"m/strong": 2}  # nothing reaches 0.99: the best
    assert got["auto?quality=0.01"] == {"m/weak": 2}  # everything does: the cheapest
    assert got["tier:fast"] == {"m/weak": 2}
    for t in targets:
        assert s["targets"][t]["passed"] == 2 and s["targets"][t]["cost_source"] == ["reported"]
    assert s["targets"]["auto?quality=0.99"]["cost_usd_total"] > \
        s["targets"]["auto?quality=0.01"]["cost_usd_total"] > 0


async def test_gateway_error_paths_are_costed(tmp_path: Path, mock: BenchMock) -> None:
    """In-process target: a stream the upstream breaks mid-way still ends with the
    gateway's usage chunk (its cost, estimated), so the bench reports the same amount as
    the gateway's request log; an HTTP error takes the gateway's x-tierline-cost-usd.
    Neither is "no --price"."""
    from tierline.accounting.log import read_rows

    log = tmp_path / "log.sqlite3"
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"""
server: {{request_log: "{log}"}}
catalog: {{builtin: false}}
resilience: {{retries: 0}}
providers:
  m: {{base_url: "{mock.url}/v1", requires_key: false}}
deployments:
  - {{name: m/only, provider: m, model: s, price: {{input: 10, output: 30}}}}
""")
    items = [Item(id=i, request={"messages": [{"role": "user", "content": p}]})
             for i, p in (("mid", "midway"), ("boom", "boom"))]
    s = await run_bench(BenchOptions(items=items, targets=["m/only"], out=tmp_path / "run",
                                     config=str(cfg), progress=False, plots=False))
    from tierline.bench.stats import read_records
    recs = {r["item_id"]: r for r in read_records(tmp_path / "run")}
    assert recs["mid"]["error_class"] == "stream_error"
    assert recs["mid"]["cost_source"] == "reported" and recs["mid"]["cost_usd"] > 0
    assert recs["boom"]["cost_source"] == "reported" and recs["boom"]["http_status"] >= 500
    rows = list(read_rows(log))
    assert len(rows) == 2 and all(r["status"] == 502 for r in rows)
    charged = sum(int(r["cost_pico"] or 0) for r in rows) / 1e12
    assert charged > 0  # the broken stream is billed by the gateway
    assert s["targets"]["m/only"]["cost_usd_total"] == pytest.approx(charged, rel=1e-9)
    assert not any("no --price" in n for n in s["targets"]["m/only"]["notes"])
