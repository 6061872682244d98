"""Embedded model: tokens/s through the gateway vs calling xllamacpp directly.

    python bench/perf/embedded_tps.py [--runs 5] [--max-tokens 128] [--port 18300]

Direct: an `xllamacpp.Server` built with the same parameters as tierline's embedded provider
(`tierline.providers.embedded._load_server`: n_ctx 2048, all CPUs), model path from
`tierline.models.fetch.resolve()`. Gateway: `tierline serve --config
bench/configs/embedded.yaml` (warmed up first), the same body over HTTP (non-streaming).
Direct runs first in its own process, then the gateway is started (a second llama.cpp
instance runs ~10x slower while the first one lives, on this 2-CPU machine). Also
records the gateway's CPU use while idle with the model loaded. Writes
bench/out/perf/embedded.json (run.py's report picks it up).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out" / "perf"
MODEL = "local/smollm2-135m-instruct"


def body(max_tokens: int, i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user",
                          "content": f"Write a long story about a robot, number {i}."}],
            "max_tokens": max_tokens, "temperature": 0.0, "seed": 1}


def direct_server() -> Any:
    import xllamacpp

    from tierline.models.fetch import resolve

    p = xllamacpp.CommonParams()
    p.model.path = str(resolve())
    p.n_ctx = 2048
    p.n_parallel = 1
    p.cpuparams.n_threads = os.cpu_count() or 1
    p.cpuparams_batch.n_threads = os.cpu_count() or 1
    p.verbosity = -1
    return xllamacpp.Server(p)


def post(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return dict(json.loads(r.read()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--port", type=int, default=18300)
    ap.add_argument("--direct-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{a.port}/v1/chat/completions"
    tl = str(Path(sys.executable).parent / "tierline")
    if a.direct_only:
        srv = direct_server()
        srv.handle_chat_completions(body(8, -1))
        d_tok, d_s = 0, 0.0
        for i in range(a.runs):
            t0 = time.perf_counter()
            r = srv.handle_chat_completions(body(a.max_tokens, i))
            d_s += time.perf_counter() - t0
            d_tok += int(r["usage"]["completion_tokens"])
        print(json.dumps({"tokens": d_tok, "seconds": d_s}), flush=True)
        os._exit(0)  # do not wait for llama.cpp's threads
    # direct in its own process, which exits before the gateway loads the model: a second
    # llama.cpp instance on the machine runs ~10x slower while the first one lives
    got = subprocess.run([sys.executable, __file__, "--direct-only", "--runs", str(a.runs),
                          "--max-tokens", str(a.max_tokens)], capture_output=True, text=True,
                         timeout=600)
    d = json.loads(got.stdout.strip().splitlines()[-1])
    d_tok, d_s = int(d["tokens"]), float(d["seconds"])
    log = open(OUT / "embedded-gateway.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([tl, "serve", "--config", str(ROOT / "bench/configs/embedded.yaml"),
                             "--port", str(a.port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TIERLINE_DATA_DIR": str(OUT / "tierline-data")},
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{a.port}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the gateway did not start") from None
                time.sleep(0.1)
        post(url, {**body(8, -1), "model": MODEL})  # loads the model (lazy)
        g_tok, g_s = 0, 0.0
        for i in range(a.runs):
            t0 = time.perf_counter()
            r = post(url, {**body(a.max_tokens, i), "model": MODEL})
            g_s += time.perf_counter() - t0
            g_tok += int(r["usage"]["completion_tokens"])
        time.sleep(1.0)
        c0 = cpu_s(proc.pid)
        time.sleep(3.0)
        idle = (cpu_s(proc.pid) - c0) / 3.0
        res = {"model": MODEL, "runs": a.runs, "max_tokens": a.max_tokens,
               "direct_tokens": d_tok, "gateway_tokens": g_tok,
               "direct_tps": d_tok / d_s, "gateway_tps": g_tok / g_s,
               "ratio": (g_tok / g_s) / (d_tok / d_s),
               "gateway_idle_cpu_cores": round(idle, 3)}
        (OUT / "embedded.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res))
        return 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of the gateway we started
        proc.wait(timeout=30)


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    raise SystemExit(main())
