"""`tierline serve --workers 2`: two processes share the port; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tierline.gateway.server import free_port


def serve_two_workers(tmp_path: Path, upstream: str, port: int, extra: str = "",
                      more: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`tierline serve --workers 2` on `port`, one deployment `m` at `upstream` (then one per
    entry of `more`: name -> upstream); data (request log, key store, ledger) under
    `tmp_path`; `extra`: more top-level YAML."""
    ups = {"m": upstream, **(more or {})}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        extra + "server:\n  request_log: " + str(tmp_path / "r.sqlite3") + "\n"
        "keys:\n  store: " + str(tmp_path / "keys.sqlite3") + "\n"
        "catalog:\n  builtin: false\nproviders:\n"
        + "".join(f"  up-{n}:\n    wire: openai\n    base_url: {u}\n    requires_key: false\n"
                  for n, u in ups.items())
        + "deployments:\n"
        + "".join(f"  - name: {n}\n    provider: up-{n}\n    model: {n}\n"
                  "    price: {input: 1, output: 1}\n    context_window: 8000\n"
                  for n in ups))
    env = {**os.environ, "TIERLINE_DATA_DIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-m", "tierline.cli", "serve", "--config",
                             str(cfg), "--port", str(port), "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def wait_ready(base: str) -> None:
    """Until the gateway answers `/models` (200, or 401 when keys are required)."""
    import asyncio

    async with httpx.AsyncClient(timeout=2) as c:
        for _ in range(300):
            try:
                if (await c.get(base + "/models")).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the gateway did not come up")


def test_two_workers_serve_one_port_and_stop_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = serve_two_workers(tmp_path, "http://127.0.0.1:9/v1", port)
    try:
        deadline = time.monotonic() + 60
        ok = 0
        while time.monotonic() < deadline and ok < 20:
            try:
                with httpx.Client(timeout=2) as c:  # new connections: spread over workers
                    r = c.get(f"http://127.0.0.1:{port}/v1/models")
                ok += r.status_code == 200 and r.json()["data"][0]["id"] == "m"
            except httpx.HTTPError:
                time.sleep(0.1)
        assert ok == 20
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) >= 2  # the workers (plus multiprocessing's resource tracker)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()[-2000:]
    assert b"Traceback" not in out, out.decode()[-2000:]


async def test_budget_rpm_and_metrics_across_workers(tmp_path: Path) -> None:
    """Two worker processes share one ledger: a key's budget admits what fits once, not once
    per process; its RPM limit counts the requests of both; /metrics shows both."""
    import asyncio

    from tests.mocks.openai_server import MockOpenAI
    from tierline.keys.store import KeyStore

    n = 24
    async with MockOpenAI() as up:
        for _ in range(n):
            up.script(latency=1.5)  # every request is still in flight when the last arrives
        store = KeyStore(tmp_path / "keys.sqlite3")
        # worst case per request: (~10 prompt + 1000 output tokens) x $1 / 1M = ~$0.00101
        _, secret = store.create("b", budget_usd=0.0062, period="total")
        _, rpm_secret = store.create("r", rpm=5)
        store.close()
        port = free_port()
        proc = serve_two_workers(tmp_path, up.url + "/v1", port)
        base = f"http://127.0.0.1:{port}/v1"
        try:
            await wait_ready(base)

            async def ask(key: str) -> int:
                # a client (connection) per request: SO_REUSEPORT spreads them over workers
                async with httpx.AsyncClient(timeout=30) as c:
                    r = await c.post(base + "/chat/completions",
                                     headers={"authorization": f"Bearer {key}"},
                                     json={"model": "m", "max_tokens": 1000,
                                           "messages": [{"role": "user", "content": "hi"}]})
                    return r.status_code

            codes = await asyncio.gather(*(ask(secret) for _ in range(n)))
            assert sorted(set(codes)) == [200, 402] and codes.count(200) == 6, codes
            rpm_codes = await asyncio.gather(*(ask(rpm_secret) for _ in range(12)))
            assert rpm_codes.count(200) == 5 and rpm_codes.count(429) == 7, rpm_codes
            # /metrics from whichever worker a scrape lands on: the totals of both
            await asyncio.sleep(1.5)  # every worker has published its counts
            for _ in range(6):
                async with httpx.AsyncClient(timeout=5) as c:
                    text = (await c.get(base.removesuffix("/v1") + "/metrics")).text
                counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("tierline_requests_total{")]
                assert sum(counts) == n + 12, text
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        assert b"Traceback" not in out, out.decode()[-3000:]


async def test_a_circuit_opened_by_one_worker_opens_in_both(tmp_path: Path) -> None:
    import asyncio

    from tests.mocks.openai_server import MockOpenAI

    async with MockOpenAI() as up:
        up.script(status=500, error_message="down")
        port = free_port()
        proc = serve_two_workers(
            tmp_path, up.url + "/v1", port,
            "resilience:\n  retries: 0\n  breaker_failures: 1\n  breaker_cooldown: 60\n")
        base = f"http://127.0.0.1:{port}/v1"
        try:
            await wait_ready(base)
            async with httpx.AsyncClient(timeout=5) as c:
                r = await c.post(base + "/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code >= 500  # one worker saw the failure and opened
            await asyncio.sleep(1.5)  # the other applies it within a second
            states = []
            for _ in range(12):  # new connections: both workers answer some of these
                async with httpx.AsyncClient(timeout=5) as c:
                    states.append((await c.get(base + "/deployments")).json()["data"][0]
                                  ["health"])
            assert states == ["open"] * 12, states
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        assert b"Traceback" not in out, out.decode()[-3000:]


async def test_fastest_strategy_learns_across_workers(tmp_path: Path) -> None:
    """The workers share their latency stats: once either has measured a deployment, none
    re-explores it, and all of them pick the fastest one."""
    import asyncio

    from tests.mocks.openai_server import MockOpenAI, OpenAIScript

    class SlowOpenAI(MockOpenAI):
        def default_script(self) -> OpenAIScript:
            return OpenAIScript(latency=0.15)

    async with SlowOpenAI() as slow, MockOpenAI() as fast:
        port = free_port()
        # `m` (slow) first: a worker that has measured nothing explores it first
        proc = serve_two_workers(tmp_path, slow.url + "/v1", port,
                                 "routing:\n  strategy: fastest\n",
                                 more={"fast": fast.url + "/v1"})
        base = f"http://127.0.0.1:{port}/v1"
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        try:
            await wait_ready(base)
            async with httpx.AsyncClient(timeout=10) as c:  # one connection: one worker
                picked = [(await c.post(base + "/chat/completions", json=body))
                          .headers["x-tierline-model"] for _ in range(2)]
            assert picked == ["m", "fast"], picked  # that worker explored both
            await asyncio.sleep(2.5)  # it published (<= 1 s), the other read (<= 1 s more)
            for _ in range(12):  # new connections: both workers answer some of these
                async with httpx.AsyncClient(timeout=10) as c:
                    deps = (await c.get(base + "/deployments")).json()["data"]
                ttft = {d["name"]: d["ttft_ewma_s"] for d in deps}
                assert None not in ttft.values(), ttft  # nothing left to explore
                assert ttft["m"] > 0.1 > ttft["fast"], ttft
            picked = []
            for _ in range(12):
                async with httpx.AsyncClient(timeout=10) as c:
                    r = await c.post(base + "/chat/completions", json=body)
                    assert r.status_code == 200, r.text
                    picked.append(r.headers["x-tierline-model"])
            assert picked == ["fast"] * 12, picked
            assert len(slow.requests) == 1  # measured once, by one worker
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        assert b"Traceback" not in out, out.decode()[-3000:]
