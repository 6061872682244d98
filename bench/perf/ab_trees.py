"""Alternated A/B of two tierline source trees against one mock upstream: wrk, CPU per
request of each gateway process from /proc (non-streaming c = 64, 20-chunk streams c = 16).

    git worktree add /tmp/wt-base <commit>
    /tmp/venv-perf/bin/python bench/perf/ab_trees.py /tmp/wt-base/src src [--rounds 4]

Uses the perf venv of `bench/perf/run.sh` (its `tierline` script, with PYTHONPATH pointing
at each tree) and `run.py`'s wrk and /proc helpers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as R  # noqa: E402  (bench/perf/run.py helpers)

ap = argparse.ArgumentParser()
ap.add_argument("base")
ap.add_argument("head")
ap.add_argument("--rounds", type=int, default=4)
a = ap.parse_args()
TREES = {"base": str(Path(a.base).resolve()), "head": str(Path(a.head).resolve())}
py = sys.executable
tl = str(Path(sys.executable).parent / "tierline")
env0 = dict(os.environ)
mock = subprocess.Popen([py, str(HERE / "mock_upstream.py"), "--port", "18000"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.5)
procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
for i, (name, src) in enumerate(TREES.items()):
    env = dict(env0, PYTHONPATH=src, TIERLINE_BENCH_UPSTREAM="http://127.0.0.1:18000/v1",
               TIERLINE_DATA_DIR=f"/tmp/ab2-{name}")
    port = 18101 + i
    procs[name] = (subprocess.Popen([tl, "serve", "--config",
                                     str(HERE.parent / "configs" / "mock-upstream.yaml"), "--port",
                                     str(port)], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL), port)
time.sleep(4)
res: dict[str, dict[str, list[tuple[float, float]]]] = {
    n: {"json": [], "stream": []} for n in TREES}
try:
    for _proc, port in procs.values():  # warm up
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        R.wrk(url, 8, 2, "mock", False)
        R.wrk(url, 8, 2, "mock", True)
    for rnd in range(a.rounds):
        for name in (["base", "head"] if rnd % 2 == 0 else ["head", "base"]):
            p, port = procs[name]
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            for mode, conc in (("json", 64), ("stream", 16)):
                c0 = R.cpu_seconds(p.pid)
                r: dict[str, Any] = R.wrk(url, conc, 6, "mock", mode == "stream")
                c1 = R.cpu_seconds(p.pid)
                n = r.get("requests") or 0
                res[name][mode].append(((c1 - c0) * 1000 / max(n, 1), n / 6))
                print(rnd, name, mode, f"{(c1 - c0) * 1000 / max(n, 1):.3f} ms/req",
                      f"{n / 6:.0f} req/s", flush=True)
finally:
    for p, _ in procs.values():
        p.terminate()
    mock.terminate()
for name in res:
    for mode in ("json", "stream"):
        v = res[name][mode]
        cpu = sorted(x[0] for x in v)[len(v) // 2]
        rps = sorted(x[1] for x in v)[len(v) // 2]
        print(f"{name} {mode}: CPU {cpu:.3f} ms/req, {rps:.0f} req/s (medians)")
