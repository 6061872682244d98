"""A real bench against the in-process gateway serving the embedded model (real tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
