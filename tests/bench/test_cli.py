"""The `tierline bench` CLI contract: files, summary keys, report, compare, export,
import-log (from a real request log written by RequestLog)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bench.conftest import item
from tests.bench.mock_upstream import BenchMock
from tierline.accounting.log import LogRecord, RequestLog
from tierline.cli import main

KEYS = ("n", "errors", "passed", "pass_rate", "cost_usd_total", "cost_per_useful_response",
        "ttft_ms", "e2e_ms", "output_tokens_per_s", "goodput", "pass_rate_ci")
PCT = ("p50", "p90", "p95", "p99", "mean", "p50_ci")


async def cli(*argv: str) -> int:
    # main() runs its own event loop: keep it off the loop that serves the mock
    return await asyncio.to_thread(main, list(argv))


async def test_run_report_compare_export(mock: BenchMock, tmp_path: Path,
                                         write_workload: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    wl = write_workload([
        item("a", "capital of France", task="geo"),
        item("b", "capital of Spain", task="geo"),
        item("c", "6 times 7", [{"type": "number", "value": 42}], task="math"),
    ])
    t1, t2 = f"{mock.url}/v1#small", f"{mock.url}/v1#big?quality=0.9"
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    common = ["bench", "run", str(wl), "--target", t1, "--target", t2,
              "--check", '{"type": "contains", "value": "Paris"}',
              "--price", "1000,2000", "--price", f"{t2}=2000,4000", "--no-progress"]
    assert await cli(*common, "--out", str(run_a), "--concurrency", "2") == 0
    assert await cli(*common, "--out", str(run_b), "--rate", "20", "--poisson",
                     "--no-plots") == 0
    assert mock.requests[-1].json.get("tierline") in ({"quality": 0.9}, None)
    assert any(r.json.get("tierline") == {"quality": 0.9} for r in mock.requests)
    for f in ("requests.jsonl", "summary.json", "summary.md", "report.html"):
        assert (run_a / f).is_file()
    assert sorted(p.name for p in (run_a / "plots").iterdir()) == sorted(
        f"{n}.png" for n in ("frontier", "latency_ecdf", "ttft_vs_prompt", "cost_breakdown"))
    html = (run_a / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "src='http" not in html and "<script" not in html and "<link" not in html
    summary = json.loads((run_a / "summary.json").read_text())
    assert set(summary["targets"]) == {t1, t2}
    for t in summary["targets"].values():
        assert all(k in t for k in KEYS)
        assert all(k in t["ttft_ms"] and k in t["e2e_ms"] for k in PCT)
        assert t["n"] == 3 and t["passed"] == 2  # default check on a, b; c has its own
    assert summary["targets"][t1]["cost_usd_total"] == pytest.approx(3 * 0.02)
    assert summary["targets"][t2]["cost_usd_total"] == pytest.approx(3 * 0.04)
    assert summary["warnings"]  # n=3 cannot separate anything
    lines = (run_a / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 6
    capsys.readouterr()

    assert await cli("bench", "compare", str(run_a), str(run_b)) == 0
    out = capsys.readouterr().out
    assert "pass_rate" in out and "cost_per_useful_response" in out and "overlap" in out

    combo = tmp_path / "combo"
    assert await cli("bench", "report", str(run_a), str(run_b), "-o", str(combo)) == 0
    md = (combo / "summary.md").read_text()
    assert f"a/{t1}" in md and f"b/{t2}" in md

    outc = tmp_path / "outcomes.jsonl"
    assert await cli("bench", "export", str(run_a), "-o", str(outc)) == 0
    rows = [json.loads(x) for x in outc.read_text().splitlines()]
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    for r in rows:
        assert set(r) >= {"id", "source", "task", "split", "messages", "outcomes"}
        assert r["split"] == "train" and r["messages"][0]["role"] == "user"
        for o in r["outcomes"].values():
            assert 0.0 <= o["score"] <= 1.0 and isinstance(o["cost_usd"], float)
    by = {r["id"].split("/")[-1]: r for r in rows}
    assert by["a"]["task"] == "geo" and by["a"]["outcomes"][t1]["score"] == 1.0
    assert by["b"]["outcomes"][t2] == {"score": 0.0, "cost_usd": pytest.approx(0.04)}

    # the loop closes: the exported outcomes teach the shipped router a new model profile
    routed = tmp_path / "router.npz"
    assert await cli("router", "add-model", "--data", str(outc), "--model", t1,
                     "--min-prompts", "3", "-o", str(routed)) == 0
    from tierline.routing.learned.model import LearnedRouter
    assert t1 in LearnedRouter.load(routed).profiles


async def test_import_log(tmp_path: Path) -> None:
    db = tmp_path / "requests.sqlite3"
    log = RequestLog(db)
    now = time.time()
    msgs = [{"role": "user", "content": "hi"}]
    # ts is when a request finished: r1 arrived first (at now - 3) but finished last
    log.write(LogRecord(id="r1", ts=now + 2, status=200, requested_model="auto",
                        prompt=json.dumps(msgs), completion_tokens=40, latency_ms=5000))
    log.write(LogRecord(id="r2", ts=now, status=502, requested_model="local/x",
                        prompt=json.dumps(msgs), latency_ms=500))
    log.write(LogRecord(id="r3", ts=now + 2, status=200))  # prompt logging was off
    log.close()
    out = tmp_path / "wl.jsonl"
    assert await cli("bench", "import-log", str(db), "-o", str(out)) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r1", "r2"]  # arrival order
    assert rows[0]["request"] == {"messages": msgs, "model": "auto", "max_tokens": 40}
    assert rows[0]["timestamp"] == pytest.approx(now - 3, abs=1e-3)
    assert rows[1]["timestamp"] - rows[0]["timestamp"] == pytest.approx(2.5, abs=1e-3)
    assert await cli("bench", "import-log", str(db), "-o", str(out), "--only-ok") == 0
    assert len(out.read_text().splitlines()) == 1
    from tierline.bench.workload import load_workload
    assert [i.id for i in load_workload(out)] == ["r1"]


async def test_bad_input_is_one_line_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "request": {"messages": []}}\n')
    assert await cli("bench", "run", str(bad), "--target", "x", "--out",
                     str(tmp_path / "o")) == 2
    assert "no 'messages'" in capsys.readouterr().err
    good = tmp_path / "g.jsonl"
    good.write_text(json.dumps(item("a", "q", [{"type": "judge"}])) + "\n")
    assert await cli("bench", "run", str(good), "--target", "http://127.0.0.1:9#m",
                     "--out", str(tmp_path / "o")) == 2
    assert "--judge" in capsys.readouterr().err


@pytest.mark.parametrize(("bad", "says"), [
    ({"checks": [{"type": "number", "value": "forty-two"}]}, "'value' must be a number"),
    ({"checks": [{"type": "regex", "pattern": "(unclosed"}]}, "invalid regex"),
    ({"checks": [{"type": "number", "value": 4, "tolerance": "x"}]},
     "'tolerance' must be a number"),
    ({"checks": [{"type": "choice", "value": "maybe"}]}, "one letter A-J"),
    ({"checks": [{"type": "python", "ref": "nosuchmod:f"}]}, "nosuchmod"),
    ({"checks": [{"type": "json_schema", "schema": {"type": 5}}]}, "invalid json_schema"),
    ({"timestamp": "yesterday"}, "'timestamp' must be a number"),
    ({"request": {"messages": ["hi"]}}, "message 1 must be an object"),
])
async def test_bad_workload_fails_before_any_request(
        mock: BenchMock, tmp_path: Path, bad: dict[str, Any], says: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A bad check or item anywhere in the workload is a one-line error naming its line,
    before the first request is sent (not a traceback mid-run, after spending money)."""
    wl = tmp_path / "wl.jsonl"
    wl.write_text(json.dumps(item("good", "say yes")) + "\n"
                  + json.dumps({**item("bad", "say yes"), **bad}) + "\n")
    out = tmp_path / "o"
    assert await cli("bench", "run", str(wl), "--target", f"{mock.url}/v1#m", "--out",
                     str(out), "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.startswith("tierline: error: workload line 2 (item 'bad')") and says in err
    assert len(err.strip().splitlines()) == 1
    assert mock.requests == [] and not out.exists()


async def test_bad_default_check_and_bom(mock: BenchMock, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    wl = tmp_path / "wl.jsonl"
    wl.write_bytes(b"\xef\xbb\xbf" + json.dumps(item("a", "say yes")).encode() + b"\n")
    assert await cli("bench", "run", str(wl), "--target", f"{mock.url}/v1#m", "--out",
                     str(tmp_path / "o"), "--check", '{"type": "regex", "pattern": "("}',
                     "--no-progress") == 2
    assert "--check: invalid regex" in capsys.readouterr().err and mock.requests == []
    # a UTF-8 BOM (Windows editors) is accepted
    assert await cli("bench", "run", str(wl), "--target", f"{mock.url}/v1#m", "--out",
                     str(tmp_path / "o"), "--no-progress", "--no-plots") == 0


async def test_compare_small_n_is_never_significant(mock: BenchMock, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    """2 requests passing vs 2 failing: not "significant" (too few requests), and the
    pass-rate CIs are Wilson intervals, not zero-width."""
    tg = f"{mock.url}/v1#m"
    runs = []
    for name, value in (("a", "Paris"), ("b", "Madrid")):
        wl = tmp_path / f"{name}.jsonl"
        wl.write_text("".join(json.dumps(item(f"q{k}", "capital of France",
                                              [{"type": "contains", "value": value}])) + "\n"
                              for k in range(2)))
        runs.append(tmp_path / name)
        assert await cli("bench", "run", str(wl), "--target", tg, "--out", str(runs[-1]),
                         "--no-progress", "--no-plots") == 0
    sa = json.loads((runs[0] / "summary.json").read_text())["targets"][tg]
    assert sa["pass_rate"] == 1.0 and sa["pass_rate_ci"][0] < 0.5
    assert sa["goodput_ci"][1] == 1.0
    capsys.readouterr()
    assert await cli("bench", "compare", str(runs[0]), str(runs[1])) == 0
    out = capsys.readouterr().out
    pass_row = next(r for r in out.splitlines() if "| pass_rate |" in r)
    assert "too few requests" in pass_row and "significant" not in out


async def test_no_latency_data_is_not_an_overlap(mock: BenchMock, tmp_path: Path,
                                                 write_workload: Any) -> None:
    from tierline.bench.runner import BenchOptions, run_bench
    from tierline.bench.workload import load_workload

    wl = write_workload([item(f"q{k}", "say yes") for k in range(10)])
    tg, dead = f"{mock.url}/v1#m", "http://127.0.0.1:9/v1#x"
    s = await run_bench(BenchOptions(items=load_workload(wl), targets=[tg, dead],
                                     out=tmp_path / "run", concurrency=10, progress=False,
                                     plots=False))
    lat = [w for w in s["warnings"] if w.startswith("p50 latency")]
    assert len(lat) == 1 and "overlap" not in lat[0]
    assert lat[0].endswith(f"no latency data for {dead} (no successful request)")


async def test_export_leaves_out_transport_failures(mock: BenchMock, tmp_path: Path,
                                                    write_workload: Any,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    """A 500, a broken stream or a refused connection is no quality observation: not a
    score of 0 in the routing outcomes, just counted on stderr."""
    chk = [{"type": "contains", "value": "Paris"}]
    wl = write_workload([item("ok", "capital of France", chk), item("boom", "boom", chk),
                         item("mid", "midway", chk), item("wrong", "capital of Spain", chk)])
    tg, dead = f"{mock.url}/v1#m", "http://127.0.0.1:9/v1#x"
    run = tmp_path / "run"
    assert await cli("bench", "run", str(wl), "--target", tg, "--target", dead, "--out",
                     str(run), "--no-progress", "--no-plots") == 0
    capsys.readouterr()
    outc = tmp_path / "o.jsonl"
    assert await cli("bench", "export", str(run), "-o", str(outc)) == 0
    rows = {r["id"].split("/")[-1]: r["outcomes"]
            for r in map(json.loads, outc.read_text().splitlines())}
    assert rows == {"ok": {tg: {"score": 1.0, "cost_usd": 0.0}},
                    "wrong": {tg: {"score": 0.0, "cost_usd": 0.0}}}
    err = capsys.readouterr().err
    assert "left out 6 requests" in err and "connection x4" in err and "http_500 x1" in err
    assert "stream_error x1" in err and "6 (item, target) pairs" in err


async def test_report_labels_runs_with_the_same_name_apart(
        mock: BenchMock, tmp_path: Path, write_workload: Any) -> None:
    wl = write_workload([item("a", "say yes")])
    tg = f"{mock.url}/v1#m"
    runs = [tmp_path / "x" / "run", tmp_path / "y" / "run"]
    for r in runs:
        assert await cli("bench", "run", str(wl), "--target", tg, "--out", str(r),
                         "--no-progress", "--no-plots") == 0
    combo = tmp_path / "combo"
    assert await cli("bench", "report", *map(str, runs), "-o", str(combo)) == 0
    md = (combo / "summary.md").read_text()
    assert f"| x/run/{tg} |" in md and f"| y/run/{tg} |" in md


async def test_ctrl_c_keeps_the_summary(mock: BenchMock, tmp_path: Path,
                                        write_workload: Any) -> None:
    """SIGINT mid-run: the summary of the completed requests is written (marked
    interrupted), one line on stderr, exit status 130."""
    import os
    import signal
    import sys

    import tierline

    wl = write_workload([item("a", "say yes"), item("b", "say yes"), item("c", "slow"),
                         item("d", "say yes")])
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(tierline.__file__).parents[1])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tierline.cli", "bench", "run", str(wl), "--target",
        f"{mock.url}/v1#m", "--out", str(out), "--no-progress", "--no-plots",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        # a shell's background job may inherit SIGINT ignored: give Python its handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while len(mock.requests) < 3:  # a and b answered, c (2 s) in flight
        assert time.monotonic() < deadline and proc.returncode is None
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tierline: interrupted: the summary")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["interrupted"] is True
    assert summary["targets"][f"{mock.url}/v1#m"]["n"] == 2
    assert "interrupted" in summary["warnings"][0]
    assert (out / "summary.md").is_file() and len(mock.requests) == 3


@pytest.mark.parametrize(("opts", "says"), [
    (["--sample", "-1"], "--sample must be 1 or more"),
    (["--sample", "0"], "--sample must be 1 or more"),
    (["--duration", "-5"], "--duration must be positive"),
    (["--warmup", "-1"], "--warmup must be 0 or more"),
    (["--timeout", "0"], "--timeout must be positive"),
    (["--rate", "nan"], "--rate must be positive"),
    (["--price", "nan,1"], "--price must be finite"),
    (["--price", "inf,1"], "--price must be finite"),
])
async def test_bad_options_are_one_line_errors(mock: BenchMock, tmp_path: Path,
                                               write_workload: Any, opts: list[str],
                                               says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    wl = write_workload([item("a", "say yes")])
    assert await cli("bench", "run", str(wl), "--target", f"{mock.url}/v1#m", "--out",
                     str(tmp_path / "o"), "--no-progress", *opts) == 2
    err = capsys.readouterr().err
    assert err.startswith("tierline: error: ") and says in err
    assert len(err.strip().splitlines()) == 1 and mock.requests == []
