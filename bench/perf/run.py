"""Side-by-side gateway benchmark: the mock upstream directly vs tierline vs the LiteLLM proxy.

    bash bench/perf/run.sh            # full run (~8 min), writes docs/performance.md
    bash bench/perf/run.sh --quick    # ~1 min smoke run, writes bench/out/perf/quick.md

run.sh prepares wrk and the two virtual envs, then runs this file with tierline's env.
Everything listens on 127.0.0.1; every load run is bounded in time.

Per cell (concurrency x streaming x mock latency) the targets run back to back, in an order
rotated from cell to cell: throughput and latency percentiles from wrk, CPU time per request
from /proc/PID/stat of the target's whole process tree; for streams, TTFT of a probe client
(stream_client.py, 1 connection; with upstream latency it waits a random 0..latency before
each request, so it samples every phase of the lock-step background load) while wrk keeps
concurrency-1 other streams going, every chunk and the usage chunk checked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "bench" / "perf"
OUT = ROOT / "bench" / "out" / "perf"
LUA = HERE / "post.lua"
LITELLM_VENV = Path(os.environ.get("TIERLINE_BENCH_LITELLM_VENV", "/tmp/tierline-bench-litellm"))
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MOCK_PORT, TL_PORT, LL1_PORT, LL2_PORT = 18000, 18100, 18201, 18202
CHUNKS = 20


# -- processes ---------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and all its live descendants."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e6


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except Exception:
        return False


@dataclass
class Target:
    name: str
    port: int
    cmd: list[str]
    health: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    startup_s: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> float:
        log = open(OUT / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, cwd=self.cwd,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up; see {log.name}")
            if http_ok(f"http://127.0.0.1:{self.port}{self.health}", 0.5):
                took = time.perf_counter() - t0
                self.startup_s.append(took)
                return took
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} not healthy after {timeout:g}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group of the process we started
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None


# -- load ---------------------------------------------------------------------------------
def wrk(url: str, conns: int, seconds: float, model: str, stream: bool) -> dict[str, Any]:
    threads = 1 if conns < 2 else 2
    env = {**os.environ, "BENCH_MODEL": model, "BENCH_STREAM": "1" if stream else "0"}
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s",
           "--timeout", "10s", "-s", str(LUA), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            r: dict[str, Any] = json.loads(line[8:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
            return r
    raise RuntimeError(f"wrk printed no summary: {out[-500:]}")


def probe(url: str, seconds: float, model: str, jitter_ms: float = 0.0) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "stream_client.py"), "--url", url, "--model", model,
           "--concurrency", "1", "--duration", f"{seconds:g}", "--chunks", str(CHUNKS),
           "--min-requests", "10", "--jitter-ms", f"{jitter_ms:g}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    try:
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    except (IndexError, json.JSONDecodeError):
        return {"error": out.stderr[-500:]}


def measure(t: Target, conc: int, stream: bool, lat: int, seconds: float) -> dict[str, Any]:
    model = "mock" if lat == 0 else f"mock-{lat}"
    c0 = cpu_seconds(t.pid)
    r = wrk(t.url, conc, seconds, model, stream)
    c1 = cpu_seconds(t.pid)
    ok = r["requests"] - r["err_status"]
    r["cpu_ms_per_req"] = 1000 * (c1 - c0) / ok if ok else None
    if stream:
        # with upstream latency the background connections move in lock-step (they all
        # wait the same 50 ms), so the probe resends after a random 0..latency pause to
        # sample every phase of their bursts, over twice the time (it sends fewer requests)
        probe_s = seconds if lat == 0 else 2 * seconds
        bg = None
        if conc > 1:
            env = {**os.environ, "BENCH_MODEL": model, "BENCH_STREAM": "1"}
            bg = subprocess.Popen(["wrk", "-t1", f"-c{conc - 1}",
                                   f"-d{max(2, round(probe_s + 1))}s", "--timeout", "10s",
                                   "-s", str(LUA), t.url], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        r["probe"] = probe(t.url, max(1.0, probe_s - 0.8), model, jitter_ms=float(lat))
        if bg is not None:
            bg.wait(timeout=seconds + 60)
    return r


# -- the run ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "date": dt.datetime.now().isoformat(timespec="seconds"),
            "loadavg_at_start": [round(x, 2) for x in load]}


def targets(quick: bool) -> list[Target]:
    upstream = f"http://127.0.0.1:{MOCK_PORT}/v1"
    tl_data = OUT / "tierline-data"
    tl_data.mkdir(parents=True, exist_ok=True)
    tl_bin = str(Path(sys.executable).parent / "tierline")
    out = [
        Target("direct", MOCK_PORT, [sys.executable, str(HERE / "mock_upstream.py"),
                                     "--port", str(MOCK_PORT), "--chunks", str(CHUNKS)],
               "/health"),
        Target("tierline", TL_PORT, [tl_bin, "serve", "--config",
                                     str(ROOT / "bench/configs/mock-upstream.yaml"),
                                     "--port", str(TL_PORT)], "/healthz",
               env={"TIERLINE_BENCH_UPSTREAM": upstream, "TIERLINE_DATA_DIR": str(tl_data)}),
    ]
    ll = LITELLM_VENV / "bin" / "litellm"
    if not ll.exists():
        print(f"! LiteLLM not found at {ll}; run bench/perf/run.sh", file=sys.stderr)
        return out
    cfg = OUT / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        + "".join(f"  - model_name: {m}\n    litellm_params: {{model: openai/{m}, "
                  f"api_base: \"{upstream}\", api_key: sk-mock}}\n" for m in ("mock", "mock-50"))
        + "litellm_settings:\n  telemetry: false\n")
    env = {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "PATH": f"{LITELLM_VENV / 'bin'}:{os.environ.get('PATH', '')}"}
    for workers, port in ((1, LL1_PORT), (2, LL2_PORT)):
        if quick and workers == 2:
            continue
        out.append(Target(f"litellm-{workers}w", port,
                          [str(ll), "--config", str(cfg), "--port", str(port),
                           "--num_workers", str(workers)], "/health/liveliness", env=env,
                          cwd=OUT))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="tierline vs LiteLLM vs direct benchmark")
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per load run")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="Markdown report path")
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk (run.sh does it)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    secs = a.seconds or (2.0 if a.quick else 5.0)
    concs = [1, 64] if a.quick else [1, 16, 64]
    lats = [0] if a.quick else [0, 50]
    ts = targets(a.quick)
    if a.no_litellm:
        ts = [t for t in ts if not t.name.startswith("litellm")]
    info = machine()
    print(f"machine: {info}", flush=True)
    results: dict[str, Any] = {"machine": info, "seconds_per_run": secs, "cells": [],
                               "startup_s": {}, "rss_mb": {}, "chunks": CHUNKS}
    try:
        for t in ts:
            took = t.start(timeout=300.0)
            print(f"{t.name}: healthy after {took:.2f}s (pid {t.pid})", flush=True)
            if t.name == "tierline":  # more start-up samples, before LiteLLM runs beside it
                for _ in range(0 if a.quick else 4):
                    t.stop()
                    t.start()
                print(f"tierline start-up samples: {[round(x, 2) for x in t.startup_s]}")
        # warm every target (connections, lazy imports, caches)
        for t in ts:
            for stream in (False, True):
                wrk(t.url, 4, 1, "mock", stream)
        i = 0
        for lat in lats:
            for stream in (False, True):
                for conc in concs:
                    order = ts[i % len(ts):] + ts[:i % len(ts)]
                    i += 1
                    cell: dict[str, Any] = {"latency_ms": lat, "stream": stream,
                                            "concurrency": conc, "targets": {}}
                    for t in order:
                        r = measure(t, conc, stream, lat, secs)
                        cell["targets"][t.name] = r
                        pr = r.get("probe") or {}
                        print(f"lat={lat:>2} stream={int(stream)} c={conc:>2} {t.name:12s} "
                              f"{r['rps']:9.1f} req/s p50={r['p50_us'] / 1000:7.2f}ms "
                              f"p99={r['p99_us'] / 1000:7.2f}ms err={r['errors']} "
                              f"cpu/req={r['cpu_ms_per_req'] or 0:.3f}ms"
                              + (f" ttft_p50={pr.get('ttft_p50_ms')}ms ok={pr.get('ok')}"
                                 f" bad={pr.get('bad')}" if stream else ""), flush=True)
                    results["cells"].append(cell)
        for t in ts:
            results["rss_mb"][t.name] = round(rss_mb(t.pid), 1)
            results["startup_s"][t.name] = [round(x, 3) for x in t.startup_s]
    finally:
        for t in reversed(ts):
            t.stop()
    emb = OUT / "embedded.json"
    if emb.exists():
        results["embedded"] = json.loads(emb.read_text())
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (OUT / f"results-{stamp}.json").write_text(json.dumps(results, indent=1))
    from report import render  # type: ignore[import-not-found, unused-ignore]

    md = render(results, quick=a.quick)
    dest = a.out or (OUT / "quick.md" if a.quick else ROOT / "docs" / "performance.md")
    dest.write_text(md)
    print(md)
    print(f"wrote {dest} and {OUT / f'results-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
