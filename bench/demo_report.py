"""The README's example bench report: `examples/workloads/demo.jsonl` against the embedded
model (`local/smollm2-135m-instruct` on the in-process gateway, real tokens, offline) and
a mock "strong" model on loopback that answers every item correctly (its `reference`)
with a configured latency and price. Writes summary.md, summary.json, report.html and
plots/*.png to docs/bench-demo/.

    python bench/demo_report.py [--out docs/bench-demo]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from tierline.bench.runner import BenchOptions, run_bench
from tierline.bench.workload import load_workload

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "examples" / "workloads" / "demo.jsonl"
EMBEDDED = "local/smollm2-135m-instruct"
STRONG_TTFT_S = 0.35  # the mock strong model: time to first token
STRONG_CHUNK_S = 0.02  # per streamed chunk
STRONG_PRICE = "2.5,10"  # USD per 1M input / output tokens (a GPT-4o-class list price)


def strong_app(answers: dict[str, str]) -> web.Application:
    """An OpenAI-format streaming server that answers each prompt with its reference."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        text = answers.get(prompt, "I do not know.")
        await asyncio.sleep(STRONG_TTFT_S)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj: Any) -> None:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        base = {"id": "chatcmpl-demo", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}
        words = text.split(" ")
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w
            await send({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                             "finish_reason": None}]})
            await asyncio.sleep(STRONG_CHUNK_S)
        await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        await send({**base, "choices": [], "usage": {
            "prompt_tokens": len(prompt) // 4 + 8, "completion_tokens": len(text) // 4 + 1,
            "total_tokens": len(prompt) // 4 + len(text) // 4 + 9}})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def main(out: Path) -> None:
    items = load_workload(WORKLOAD)
    answers = {it.prompt_text: str(it.meta["reference"]) for it in items}
    runner = web.AppRunner(strong_app(answers))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    strong = f"http://127.0.0.1:{port}/v1#mock-strong"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TIERLINE_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ.pop("TIERLINE_CONFIG", None)
        run_dir = Path(tmp) / "run"
        try:
            await run_bench(BenchOptions(
                items=items, targets=[EMBEDDED, strong], out=run_dir, concurrency=2,
                warmup=1, prices=[f"{strong}={STRONG_PRICE}"], slo_ttft_ms=1000,
                workload_name="examples/workloads/demo.jsonl"))
        finally:
            await runner.cleanup()
        # the port is ephemeral: name the mock stably in the committed files
        out.mkdir(parents=True, exist_ok=True)
        for f in ("summary.json", "requests.jsonl"):
            p = run_dir / f
            p.write_text(p.read_text().replace(strong, "mock-strong"))
        from tierline.bench.report import write_reports
        write_reports([run_dir], run_dir)
        for f in ("summary.md", "summary.json", "report.html"):
            shutil.copy(run_dir / f, out / f)
        (out / "plots").mkdir(exist_ok=True)
        for png in (run_dir / "plots").glob("*.png"):
            shutil.copy(png, out / "plots" / png.name)
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench-demo"))
    asyncio.run(main(Path(ap.parse_args().out)))
