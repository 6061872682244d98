"""Bench runs against a mock upstream with known latency, answers, errors and usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bench.conftest import CHUNKS, DELAY, LATENCY, item
from tests.bench.mock_upstream import BenchMock
from tierline.bench.runner import BenchOptions, run_bench
from tierline.bench.workload import load_workload

PRICE = "1000,2000"  # USD / 1M tokens; the mock's usage is 10 in + 5 out
COST = (10 * 1000 + 5 * 2000) / 1e6  # 0.02 per answered request

SCHEMA = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}

CHECKED = [
    item("contains-ok", "capital of France?", [{"type": "contains", "value": "paris",
                                                "ignore_case": True}]),
    item("contains-bad", "capital of Spain?", [{"type": "contains", "value": "Madrid"}]),
    item("regex", "zip code?", [{"type": "regex", "pattern": r"\b\d{5}\b"}]),
    item("exact", "say yes", [{"type": "exact", "value": "yes"}]),
    item("number-ok", "6 times 7?", [{"type": "number", "value": 42, "tolerance": 0}]),
    item("number-bad", "2 plus 2?", [{"type": "number", "value": 4}]),
    item("choice", "Which letter? A) x B) y", [{"type": "choice", "value": "B"}]),
    item("json-ok", "json person", [{"type": "json_schema", "schema": SCHEMA}]),
    item("json-bad", "json broken", [{"type": "json_schema", "schema": SCHEMA}]),
    item("python", "shout", [{"type": "python", "ref": "tests.bench.checkfns:is_shouting"}]),
    item("error", "boom", [{"type": "contains", "value": "x"}]),
    item("unchecked", "chat freely"),
]
PASSING = {"contains-ok", "regex", "exact", "number-ok", "choice", "json-ok", "python",
           "unchecked"}


def target(m: BenchMock, model: str = "mock-model") -> str:
    return f"{m.url}/v1#{model}"


async def run(tmp_path: Path, wl: Path, targets: list[str], **kw: Any) -> dict[str, Any]:
    o = BenchOptions(items=load_workload(wl), targets=targets, out=tmp_path / "run",
                     progress=False, plots=False, **kw)
    return await run_bench(o)


async def test_checks_latency_cost(mock: BenchMock, tmp_path: Path, write_workload: Any
                                   ) -> None:
    wl = write_workload(CHECKED)
    tg = target(mock)
    s = (await run(tmp_path, wl, [tg], concurrency=4, prices=[PRICE]))["targets"][tg]
    assert s["n"] == 12 and s["errors"] == 1
    assert s["errors_by_class"] == {"http_500": 1}
    assert s["passed"] == len(PASSING)
    assert s["pass_rate"] == pytest.approx(8 / 12)
    assert s["cost_usd_total"] == pytest.approx(11 * COST, rel=1e-12)
    assert s["cost_per_useful_response"] == pytest.approx(11 * COST / 8, rel=1e-12)
    assert s["completion_tokens_total"] == 55
    lo = (LATENCY + DELAY) * 1000
    assert lo <= s["ttft_ms"]["p50"] < lo + 200
    e2e_lo = (LATENCY + (CHUNKS + 1) * DELAY) * 1000
    assert e2e_lo <= s["e2e_ms"]["p50"] < e2e_lo + 200
    assert s["e2e_ms"]["p50_ci"][0] <= s["e2e_ms"]["p50"] <= s["e2e_ms"]["p50_ci"][1]
    assert s["goodput"] == pytest.approx(8 / 12)  # all under the 1000 ms SLO
    recs = {r["item_id"]: r for r in _records(tmp_path / "run")}
    assert {i for i, r in recs.items() if r["passed"]} == PASSING
    assert recs["error"]["cost_source"] == "no_usage" and recs["error"]["http_status"] == 500
    assert recs["exact"]["answer"] == "yes"
    assert len(recs["contains-ok"]["itl_ms"]) == CHUNKS - 1
    assert all(x >= DELAY * 1000 * 0.8 for x in recs["contains-ok"]["itl_ms"])
    # always streamed with usage, model replaced by the target's
    body = mock.requests[-1].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "mock-model"


async def test_slo_goodput_and_no_pass(mock: BenchMock, tmp_path: Path, write_workload: Any
                                       ) -> None:
    wl = write_workload([item("a", "capital of Spain", [{"type": "contains", "value": "Z"}]),
                         item("b", "2 plus 2", [{"type": "number", "value": 4}])])
    tg = target(mock)
    s = (await run(tmp_path, wl, [tg], slo_ttft_ms=50))["targets"][tg]
    assert s["passed"] == 0 and s["cost_per_useful_response"] is None
    assert any("undefined" in n for n in s["notes"])
    assert any("no --price" in n for n in s["notes"]) and s["cost_usd_total"] == 0
    assert s["goodput"] == 0


async def test_error_classes(mock: BenchMock, tmp_path: Path, write_workload: Any) -> None:
    wl = write_workload([item("t", "slow"), item("s", "midway"), item("c", "cut")])
    dead = "http://127.0.0.1:9/v1#x"  # discard port: connection refused
    summ = await run(tmp_path, wl, [target(mock), dead], timeout=0.6, concurrency=3)
    s = summ["targets"][target(mock)]
    assert s["errors_by_class"] == {"timeout": 1, "stream_error": 1, "truncated": 1}
    assert summ["targets"][dead]["errors_by_class"] == {"connection": 3}


async def test_judge(mock: BenchMock, tmp_path: Path, write_workload: Any) -> None:
    judge = BenchMock({"capital is Paris": {"text": "CORRECT"},
                       "I do not know": {"text": "NOT_ATTEMPTED"}})
    await judge.start()
    try:
        chk = [{"type": "judge", "rubric": "names the capital"}]
        wl = write_workload([item("a", "capital of France", chk), item("b", "capital of X",
                                                                       chk)])
        tg, jt = target(mock), f"{judge.url}/v1#judge"
        summ = await run(tmp_path, wl, [tg], judge=jt,
                         prices=[f"{tg}={PRICE}", f"{jt}=1000,1000"])
    finally:
        await judge.stop()
    s = summ["targets"][tg]
    assert s["passed"] == 1 and s["verdicts"] == {"correct": 1, "not_attempted": 1}
    assert s["cost_usd_judge"] == pytest.approx(2 * 0.015)
    assert s["cost_per_useful_response"] == pytest.approx(2 * COST + 2 * 0.015)
    assert len(judge.requests) == 2


async def test_a_failed_judge_call_is_still_costed(mock: BenchMock, tmp_path: Path,
                                                   write_workload: Any) -> None:
    """A judge stream that breaks mid-way was billed: its cost stays in the spend (it was
    dropped as $0), and the check fails."""
    judge = BenchMock({"capital": {"text": "CORRECT because", "chunks": 3,
                                   "stream_error": "error_object", "error_after": 1}})
    await judge.start()
    try:
        chk = [{"type": "judge", "rubric": "names the capital"}]
        wl = write_workload([item("a", "capital of France", chk)])
        tg, jt = target(mock), f"{judge.url}/v1#judge"
        summ = await run(tmp_path, wl, [tg], judge=jt,
                         prices=[f"{tg}={PRICE}", f"{jt}=1000,1000"])
    finally:
        await judge.stop()
    s = summ["targets"][tg]
    assert s["passed"] == 0
    assert s["cost_usd_judge"] > 0


async def test_warmup_and_load_modes(mock: BenchMock, tmp_path: Path, write_workload: Any
                                     ) -> None:
    wl = write_workload([item(f"i{k}", "say yes", timestamp=10 + 0.3 * k) for k in range(3)])
    tg = target(mock)
    s = (await run(tmp_path, wl, [tg], warmup=2))["targets"][tg]
    assert s["n"] == 3 and s["warmup"] == 2
    # replay at 2x: starts 0.15 s apart
    await run(tmp_path, wl, [tg], replay=True, speedup=2.0)
    starts = [r["t_start_s"] for r in _records(tmp_path / "run")]
    assert 0.13 <= starts[1] - starts[0] < 0.3 and 0.28 <= starts[2] - starts[0] < 0.45
    # open loop at 10/s: arrivals do not wait for answers (each takes > 0.18 s)
    await run(tmp_path, wl, [tg], rate=10.0)
    starts = sorted(r["t_start_s"] for r in _records(tmp_path / "run"))
    assert 0.18 <= starts[2] - starts[0] < 0.35
    # closed loop at concurrency 3: all start together
    await run(tmp_path, wl, [tg], concurrency=3)
    starts = sorted(r["t_start_s"] for r in _records(tmp_path / "run"))
    assert starts[2] - starts[0] < 0.1
    # bounded duration: cycles the workload, stops sending after 0.5 s
    s = (await run(tmp_path, wl, [tg], duration=0.5))["targets"][tg]
    assert 2 <= s["n"] <= 4


def _records(run_dir: Path) -> list[dict[str, Any]]:
    from tierline.bench.stats import read_records
    return read_records(run_dir)


async def test_failed_requests_are_costed(mock: BenchMock, tmp_path: Path,
                                          write_workload: Any) -> None:
    """A stream that fails mid-way without usage was still billed: estimated from the
    prompt (the gateway's token estimator) + the output received; a request that never
    started (HTTP 500, timeout before the headers) reports nothing and costs $0."""
    from tierline.bench.targets import estimate_tokens

    wl = write_workload([item("s", "midway"), item("b", "boom"), item("t", "slow"),
                         item("c", "cut")])
    tg = target(mock)
    s = (await run(tmp_path, wl, [tg], prices=[PRICE], timeout=1.5))["targets"][tg]
    recs = {r["item_id"]: r for r in _records(tmp_path / "run")}
    mid = recs["s"]
    assert mid["error_class"] == "stream_error" and mid["answer"]
    pt, ct = estimate_tokens([{"role": "user", "content": "midway"}], mid["answer"])
    assert pt > 0 and ct > 0
    assert mid["cost_source"] == "estimated"
    assert mid["cost_usd"] == pytest.approx((pt * 1000 + ct * 2000) / 1e6)
    assert recs["c"]["cost_source"] == "price" and recs["c"]["cost_usd"] == pytest.approx(COST)
    assert recs["b"]["cost_source"] == "no_usage" and recs["b"]["cost_usd"] == 0
    assert recs["t"]["cost_source"] == "no_usage" and recs["t"]["cost_usd"] == 0
    assert s["cost_usd_total"] == pytest.approx(mid["cost_usd"] + COST)
    assert any("estimated" in n for n in s["notes"])
    assert not any("no --price" in n for n in s["notes"])


async def test_decode_rate_and_tool_call_ttft(tmp_path: Path, write_workload: Any) -> None:
    """Decode rate = (completion_tokens - 1) / (e2e - ttft), undefined (None) when the
    whole output came in one chunk; the per-target value is the real median. A tool-call
    answer has a first token (so it can count in goodput)."""
    import statistics

    m = BenchMock({"fast": {"delay": 0.01}, "slow": {"delay": 0.05},
                   "one chunk": {"chunks": 1, "completion_tokens": 40},
                   "weather": {"text": None, "tool_calls": [("get_weather", {"c": "Oslo"})]}},
                  latency=0.02, completion_tokens=9)
    await m.start()
    try:
        wl = write_workload([item("f", "fast"), item("s", "slow"), item("o", "one chunk"),
                             item("w", "weather?")])
        tg = target(m)
        s = (await run(tmp_path, wl, [tg]))["targets"][tg]
    finally:
        await m.stop()
    recs = {r["item_id"]: r for r in _records(tmp_path / "run")}
    for i in ("f", "s"):
        r = recs[i]
        assert r["output_tokens_per_s"] == pytest.approx(
            8 / ((r["e2e_ms"] - r["ttft_ms"]) / 1000))
        assert r["tpot_ms"] == pytest.approx((r["e2e_ms"] - r["ttft_ms"]) / 8)
    assert recs["o"]["ttft_ms"] is not None and recs["o"]["output_tokens_per_s"] is None
    assert recs["o"]["tpot_ms"] is None
    tps = [recs[i]["output_tokens_per_s"] for i in ("f", "s", "w")]
    assert s["output_tokens_per_s"] == pytest.approx(statistics.median(tps), abs=1e-3)
    w = recs["w"]
    assert w["ok"] and w["answer"] == "" and w["passed"]
    assert w["ttft_ms"] is not None and 20 <= w["ttft_ms"] < w["e2e_ms"]
    assert s["good"] == 4 and s["goodput"] == 1.0
