"""Soak: minutes of mixed traffic through tierline against the mock; RSS over time.

    python bench/perf/soak.py [--minutes 3] [--concurrency 16]

Starts the mock upstream and `tierline serve --config bench/configs/soak.yaml`, then sends a
bounded chaos mix: non-streaming and streaming (0 / 50 ms), fail-over from an upstream 503,
streams the upstream cuts mid-way, clients that hang up mid-stream, invalid bodies, unknown
models. Prints tierline's RSS every 10 s and the growth from the first sample after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "bench" / "perf"
OUT = ROOT / "bench" / "out" / "perf"
PAGE = os.sysconf("SC_PAGE_SIZE")
MOCK_PORT, TL_PORT = 18010, 18110


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def body(model: str, stream: bool) -> bytes:
    b: dict[str, object] = {"model": model, "max_tokens": 32,
                            "messages": [{"role": "user", "content": "hello " * 20}]}
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    return orjson.dumps(b)


MIX: list[tuple[str, float]] = [
    ("json", 30), ("stream", 30), ("json50", 8), ("stream50", 8), ("chaos", 8),
    ("cut", 5), ("hangup", 5), ("invalid", 3), ("unknown", 3),
]


async def one(s: aiohttp.ClientSession, url: str, kind: str) -> str:
    hdr = {"content-type": "application/json"}
    data = {
        "json": body("mock", False), "stream": body("mock", True),
        "json50": body("mock-50", False), "stream50": body("mock-50", True),
        "chaos": body("chaos", False), "cut": body("mock-cut", True),
        "hangup": body("mock-50", True), "invalid": b'{"model": "mock", "messages": 3}',
        "unknown": body("nope", False),
    }[kind]
    async with s.post(url, data=data, headers=hdr) as r:
        if kind == "hangup":
            await r.content.readline()
            r.close()  # drop the connection mid-stream
            return f"{kind}:{r.status}"
        await r.read()
        return f"{kind}:{r.status}"


async def load(url: str, conc: int, seconds: float, pid: int) -> Counter[str]:
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    counts: Counter[str] = Counter()
    rng = random.Random(1)
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def worker() -> None:
            while time.monotonic() < end:
                kind = rng.choices(kinds, weights)[0]
                try:
                    counts[await one(s, url, kind)] += 1
                except Exception as e:
                    counts[f"{kind}:{type(e).__name__}"] += 1

        async def monitor() -> None:
            t0 = time.monotonic()
            base: float | None = None
            while time.monotonic() < end:
                await asyncio.sleep(10)
                r = rss_mb(pid)
                if base is None:
                    base = r
                print(f"t={time.monotonic() - t0:6.0f}s rss={r:7.1f} MB "
                      f"(+{r - base:5.1f} since first sample) requests={sum(counts.values())}",
                      flush=True)

        await asyncio.gather(monitor(), *(worker() for _ in range(conc)))
    return counts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    seconds = min(max(a.minutes, 0.2), 30.0) * 60  # bounded
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / "soak-data"
    data.mkdir(exist_ok=True)
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, str(HERE / "mock_upstream.py"),
                                       "--port", str(MOCK_PORT)], start_new_session=True,
                                      stdout=subprocess.DEVNULL))
        env = {**os.environ, "TIERLINE_BENCH_UPSTREAM": f"http://127.0.0.1:{MOCK_PORT}/v1",
               "TIERLINE_DATA_DIR": str(data)}
        tl = subprocess.Popen([str(Path(sys.executable).parent / "tierline"), "serve",
                               "--config", str(ROOT / "bench/configs/soak.yaml"),
                               "--port", str(TL_PORT)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(tl)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{TL_PORT}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("tierline did not start") from None
                time.sleep(0.1)
        print(f"tierline pid {tl.pid}, rss at start {rss_mb(tl.pid):.1f} MB", flush=True)
        try:
            import uvloop
            uvloop.install()
        except ImportError:  # pragma: no cover
            pass
        counts = asyncio.run(load(f"http://127.0.0.1:{TL_PORT}/v1/chat/completions",
                                  a.concurrency, seconds, tl.pid))
        print(f"final rss {rss_mb(tl.pid):.1f} MB; outcomes: {dict(sorted(counts.items()))}")
        return 0
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)  # the groups of the processes started above
            p.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
