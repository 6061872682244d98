"""Streaming load client: TTFT and completeness of every stream (aiohttp on uvloop).

    python bench/perf/stream_client.py --url http://127.0.0.1:18100/v1/chat/completions \
        --concurrency 16 --duration 3 --model mock --chunks 20

Each worker sends streaming requests back to back (bounded by --duration and --max-requests;
`--jitter-ms X` waits a random 0..X ms before each one)
and checks each stream: `--chunks` content chunks, one usage chunk, then `[DONE]`. Prints one
JSON line: requests, ok, bad, TTFT and total-latency percentiles in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from typing import Any

import aiohttp
import orjson


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(p / 100.0 * (len(s) - 1))))
    return s[k]


async def one(session: aiohttp.ClientSession, url: str, body: bytes, chunks: int
              ) -> tuple[float, float, str | None]:
    t0 = time.perf_counter()
    ttft = -1.0
    content = 0
    usage = False
    done = False
    async with session.post(url, data=body, headers={"content-type": "application/json",
                                                     "authorization": "Bearer sk-bench"}) as r:
        if r.status != 200:
            await r.read()
            return 0.0, 0.0, f"HTTP {r.status}"
        async for line in r.content:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                continue
            obj: dict[str, Any] = orjson.loads(data)
            if obj.get("usage"):
                usage = True
            for c in obj.get("choices") or ():
                d = c.get("delta") or {}
                if d.get("content"):
                    if ttft < 0:
                        ttft = time.perf_counter() - t0
                    content += 1
    total = time.perf_counter() - t0
    err = None
    if content != chunks:
        err = f"{content} content chunks, expected {chunks}"
    elif not usage:
        err = "no usage chunk"
    elif not done:
        err = "no [DONE]"
    return ttft, total, err


async def run(a: argparse.Namespace) -> dict[str, Any]:
    body = orjson.dumps({"model": a.model, "stream": True, "max_tokens": 32,
                         "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": "Say hello in five words."}]})
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    ttfts: list[float] = []
    totals: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + a.duration
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30),
                                     skip_auto_headers=("User-Agent",)) as s:
        # warm the connections (not measured)
        await asyncio.gather(*(one(s, a.url, body, a.chunks) for _ in range(a.concurrency)),
                             return_exceptions=True)

        async def worker() -> None:
            nonlocal sent
            while (time.perf_counter() < deadline or sent < a.min_requests) \
                    and sent < a.max_requests and time.perf_counter() < deadline + 30:
                if a.jitter_ms > 0:
                    # a random phase per request: under a closed-loop background load whose
                    # connections move in lock-step, a probe that resends at once keeps the
                    # same place in each burst for the whole run
                    await asyncio.sleep(random.uniform(0, a.jitter_ms) / 1000.0)
                sent += 1
                try:
                    ttft, total, err = await one(s, a.url, body, a.chunks)
                except Exception as e:
                    err, ttft, total = type(e).__name__, 0.0, 0.0
                if err:
                    errors[err] = errors.get(err, 0) + 1
                else:
                    ttfts.append(ttft)
                    totals.append(total)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        wall = time.perf_counter() - t0
    ms = 1000.0
    return {
        "requests": sent, "ok": len(ttfts), "bad": sent - len(ttfts), "errors": errors,
        "wall_s": round(wall, 3), "rps": round(len(ttfts) / wall, 1) if wall else 0,
        "ttft_p50_ms": _r(pct(ttfts, 50), ms), "ttft_p99_ms": _r(pct(ttfts, 99), ms),
        "total_p50_ms": _r(pct(totals, 50), ms), "total_p99_ms": _r(pct(totals, 99), ms),
    }


def _r(v: float | None, scale: float) -> float | None:
    return None if v is None else round(v * scale, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="mock")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--max-requests", type=int, default=20000)
    ap.add_argument("--min-requests", type=int, default=5,
                    help="keep going past --duration (up to 30 s) until this many were sent")
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--jitter-ms", type=float, default=0.0,
                    help="sleep a uniform random 0..X ms before each request")
    a = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    out = asyncio.run(run(a))
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


if __name__ == "__main__":
    main()
