"""Running a bench: targets one after another, each under the chosen load mode
(closed loop at a concurrency, open loop at a constant / Poisson rate, or trace replay
at the logged timestamps), with warm-up, a bounded duration, checks and a live progress
bar; results go to `requests.jsonl`, `items.jsonl`, `summary.json` and the reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from tierline.bench.checks import JudgeFailed, JudgeFn, run_checks, validate_checks
from tierline.bench.client import StreamResult, stream_chat
from tierline.bench.targets import Price, Target, apply_prices, parse_target, request_cost
from tierline.bench.workload import BenchError, Item


@dataclass
class BenchOptions:
    items: list[Item]
    targets: list[str]
    out: Path
    config: str | None = None
    concurrency: int = 1
    rate: float | None = None
    poisson: bool = False
    replay: bool = False
    speedup: float = 1.0
    warmup: int = 0
    duration: float | None = None
    judge: str | None = None
    slo_ttft_ms: float = 1000.0
    slo_e2e_ms: float | None = None
    prices: list[str] = field(default_factory=list)
    timeout: float = 120.0
    progress: bool | None = None  # None: only when stderr is a TTY
    seed: int = 0
    workload_name: str = "workload"
    plots: bool = True


@dataclass
class _Live:
    done: int = 0
    errors: int = 0
    passed: int = 0
    spend: float = 0.0


def _arrivals(items: list[Item], o: BenchOptions) -> Iterator[tuple[float, Item]]:
    """(seconds after start, item) for the open-loop modes."""
    import numpy as np

    if o.replay:
        ts = [it.timestamp for it in items]
        if any(t is None for t in ts):
            raise BenchError("--replay needs a 'timestamp' on every workload item")
        order = sorted(items, key=lambda it: it.timestamp or 0.0)
        t0 = order[0].timestamp or 0.0
        for it in order:
            yield ((it.timestamp or 0.0) - t0) / o.speedup, it
        return
    assert o.rate is not None
    rng = np.random.default_rng(o.seed)
    t = 0.0
    for it in _cycle(items, o.duration is not None):
        yield t, it
        t += float(rng.exponential(1.0 / o.rate)) if o.poisson else 1.0 / o.rate


def _cycle(items: list[Item], forever: bool) -> Iterator[Item]:
    while True:
        yield from items
        if not forever:
            return


async def _dispatch(items: list[Item], o: BenchOptions,
                    send: Callable[[Item], Coroutine[Any, Any, None]], warmup: bool) -> None:
    deadline = (time.monotonic() + o.duration) if (o.duration and not warmup) else None
    if warmup or (o.rate is None and not o.replay):
        it = _cycle(items, deadline is not None)

        async def worker() -> None:
            for item in it:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                await send(item)

        await asyncio.gather(*(worker() for _ in range(max(1, o.concurrency))))
        return
    start = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    for at, item in _arrivals(items, o):
        if deadline is not None and start + at >= deadline:
            break
        delay = start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(item))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


# the price of a deployment of the in-process gateway, by name (None: unknown)
PriceOf = Callable[[str | None], Price | None]


def _no_prices(_: str | None) -> Price | None:
    return None


def cost_of(t: Target, r: StreamResult, messages: list[dict[str, Any]], prices: PriceOf
            ) -> tuple[float, str]:
    """What one request cost: as reported, else priced (the target's --price, or for an
    in-process target the catalog price of the deployment that served it), else
    estimated when it started without reporting usage (see `request_cost`)."""
    price = t.price if t.price is not None or not t.in_process else prices(r.route_model)
    return request_cost(t, r.usage, price=price, header=r.cost_header,
                        started=r.http_status == 200, messages=messages, partial=r.text)


def _judge_fn(session: aiohttp.ClientSession, judge: Target, base: Callable[[Target], str],
              timeout: float, prices: PriceOf) -> JudgeFn:
    async def call(prompt: str) -> tuple[str, float]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        req = {"messages": messages, "max_tokens": 16, "temperature": 0}
        r = await stream_chat(session, judge, base(judge), req, timeout)
        cost, _ = cost_of(judge, r, messages, prices)
        if not r.ok:
            raise JudgeFailed(f"{r.error_class}: {r.error}", cost)
        return r.text, cost
    return call


class _Run:
    def __init__(self, o: BenchOptions, targets: list[Target], judge: Target | None,
                 gateway_url: str | None, out: IO[str], prices: PriceOf = _no_prices
                 ) -> None:
        self.o, self.targets, self.judge = o, targets, judge
        self.gateway_url, self.out, self.prices = gateway_url, out, prices
        self.seq = 0
        self.t_start = time.perf_counter()

    def base(self, t: Target) -> str:
        if t.base_url:
            return t.base_url
        assert self.gateway_url is not None
        return self.gateway_url

    async def one(self, session: aiohttp.ClientSession, t: Target, item: Item,
                  warmup: bool, live: _Live, judge: JudgeFn | None) -> None:
        self.seq += 1
        seq = self.seq
        started = time.perf_counter() - self.t_start
        r = await stream_chat(session, t, self.base(t), item.request, self.o.timeout)
        cost, source = cost_of(t, r, item.messages, self.prices)
        usage = r.usage or {}
        ctoks = int(usage.get("completion_tokens") or 0)
        results = (await run_checks(item.checks, r.text, item, judge)
                   if r.ok and item.checks else [])
        judge_cost = sum(c.cost_usd for c in results)
        passed = r.ok and all(c.passed for c in results)
        # decode: from the first token to the end, over the tokens after the first; not
        # defined when the whole output came in one chunk (nothing was seen decoding)
        decode_ms = (r.e2e_ms - r.ttft_ms
                     if r.ttft_ms is not None and r.itl_ms and ctoks > 1 else None)
        rec: dict[str, Any] = {
            "seq": seq, "target": t.name, "item_id": item.id, "warmup": warmup,
            "t_start_s": round(started, 6), "ok": r.ok, "error_class": r.error_class,
            "http_status": r.http_status, "error": r.error,
            "ttft_ms": r.ttft_ms, "e2e_ms": r.e2e_ms,
            "tpot_ms": decode_ms / (ctoks - 1) if decode_ms else None,
            "itl_ms": [round(x, 3) for x in r.itl_ms],
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": ctoks,
            "output_tokens_per_s": ((ctoks - 1) / (decode_ms / 1000)
                                    if r.ok and decode_ms else None),
            "prompt_chars": len(item.prompt_text),
            "cost_usd": cost, "cost_source": source, "judge_cost_usd": judge_cost,
            "route_model": r.route_model, "route": r.route,
            "finish_reason": r.finish_reason, "checked": bool(item.checks),
            "passed": passed, "checks": [c.to_json() for c in results],
            "answer": r.text,
        }
        if "task" in item.meta:
            rec["task"] = item.meta["task"]
        self.out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if not warmup:
            live.done += 1
            live.errors += 0 if r.ok else 1
            live.passed += 1 if passed else 0
            live.spend += cost + judge_cost

    async def target(self, session: aiohttp.ClientSession, t: Target,
                     tick: Callable[[str, _Live], None]) -> None:
        live = _Live()
        judge = (_judge_fn(session, self.judge, self.base, self.o.timeout, self.prices)
                 if self.judge else None)
        if self.o.warmup > 0:
            src = _cycle(self.o.items, True)
            warm = [next(src) for _ in range(self.o.warmup)]

            async def send_warm(item: Item) -> None:
                await self.one(session, t, item, True, live, None)
            await _dispatch(warm, self.o, send_warm, warmup=True)

        async def send(item: Item) -> None:
            await self.one(session, t, item, False, live, judge)
            tick(t.name, live)
        await _dispatch(self.o.items, self.o, send, warmup=False)


def validate_options(o: BenchOptions) -> None:
    """Numbers that must be finite and positive (or at least 0), checked before any
    request: a clear error instead of a traceback or a silently absurd run."""
    def bad(v: float | None, zero_ok: bool) -> bool:
        return v is not None and not (math.isfinite(v) and (v >= 0 if zero_ok else v > 0))

    for name, v, zero_ok in (("--concurrency", o.concurrency, False), ("--rate", o.rate, False),
                             ("--speedup", o.speedup, False), ("--warmup", o.warmup, True),
                             ("--duration", o.duration, False), ("--timeout", o.timeout, False),
                             ("--slo-ttft-ms", o.slo_ttft_ms, False),
                             ("--slo-e2e-ms", o.slo_e2e_ms, False)):
        if bad(v, zero_ok):
            raise BenchError(f"{name} must be {'0 or more' if zero_ok else 'positive'}, "
                             f"got {v:g}")


def resolve_targets(o: BenchOptions) -> tuple[list[Target], Target | None]:
    validate_options(o)
    if not o.targets:
        raise BenchError("at least one --target is needed")
    targets = [parse_target(s) for s in o.targets]
    if len({t.name for t in targets}) != len(targets):
        raise BenchError("the same --target is given twice")
    judge = parse_target(o.judge) if o.judge else None
    apply_prices(targets + ([judge] if judge else []), o.prices)
    for it in o.items:
        validate_checks(it.checks, f"item {it.id}")
        if any(c.get("type") == "judge" for c in it.checks) and judge is None:
            raise BenchError(f"item {it.id} has a judge check: give --judge TARGET")
    if o.replay and any(it.timestamp is None for it in o.items):
        raise BenchError("--replay needs a 'timestamp' on every workload item")
    return targets, judge


@contextlib.contextmanager
def _gateway(needed: bool, config: str | None) -> Iterator[tuple[str | None, PriceOf]]:
    """(base URL, deployment prices) of the in-process gateway, when a target needs it."""
    if not needed:
        yield None, _no_prices
        return
    from tierline.config import load_config
    from tierline.gateway.server import GatewayThread

    with GatewayThread(load_config(config)) as g:
        deployments = g.app.catalog.deployments

        def price_of(name: str | None) -> Price | None:
            dep = deployments.get(name) if name else None
            return Price(dep.price.input, dep.price.output) if dep is not None else None
        yield g.base_url, price_of


def _progress(o: BenchOptions, total: int) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    enabled = o.progress if o.progress is not None else sys.stderr.isatty()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"),
                    console=Console(stderr=True), disable=not enabled, transient=False)


async def _run_targets(o: BenchOptions, targets: list[Target], judge: Target | None,
                       out: IO[str]) -> None:
    needed = any(t.in_process for t in targets) or bool(judge and judge.in_process)
    with _gateway(needed, o.config) as (gw_url, prices):
        run = _Run(o, targets, judge, gw_url, out, prices)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as session:
            with _progress(o, len(o.items)) as prog:
                for t in targets:
                    task = prog.add_task(t.name, total=None if o.duration else len(o.items),
                                         stats="")

                    def tick(name: str, live: _Live, task: Any = task) -> None:
                        prog.update(task, completed=live.done, stats=(
                            f"pass {live.passed}  err {live.errors}  ${live.spend:.6f}"))
                    await run.target(session, t, tick)


async def run_bench(o: BenchOptions) -> dict[str, Any]:
    """Run every target, write the run directory and return the summary. Interrupted
    (Ctrl-C, or the task cancelled), it still writes the summary of the requests that
    completed, marked `"interrupted": true`, then lets the interruption go on."""
    from tierline.bench.report import write_reports
    from tierline.bench.stats import summarize

    targets, judge = resolve_targets(o)
    o.out.mkdir(parents=True, exist_ok=True)
    (o.out / "summary.json").unlink(missing_ok=True)  # never a stale one
    with (o.out / "items.jsonl").open("w", encoding="utf-8") as f:
        for it in o.items:
            f.write(json.dumps({"id": it.id, "request": it.request, "checks": it.checks,
                                "timestamp": it.timestamp, **it.meta},
                               ensure_ascii=False) + "\n")
    t0 = time.time()
    interrupted: BaseException | None = None
    with (o.out / "requests.jsonl").open("w", encoding="utf-8") as out:
        try:
            await _run_targets(o, targets, judge, out)
        except (asyncio.CancelledError, KeyboardInterrupt) as e:
            interrupted = e
    meta = {"workload": o.workload_name, "started": t0, "wall_s": time.time() - t0,
            "targets": [t.name for t in targets], "judge": o.judge,
            "mode": ("replay" if o.replay else "poisson" if o.poisson and o.rate
                     else "rate" if o.rate else "closed"),
            "concurrency": o.concurrency, "rate": o.rate, "speedup": o.speedup,
            "warmup": o.warmup, "duration": o.duration, "slo_ttft_ms": o.slo_ttft_ms,
            "slo_e2e_ms": o.slo_e2e_ms, "n_items": len(o.items),
            "prices": {t.name: [t.price.input_per_mtok, t.price.output_per_mtok]
                       for t in targets if t.price},
            "interrupted": interrupted is not None}
    summary = summarize(o.out, meta)
    write_reports([o.out], o.out, plots=o.plots and interrupted is None)
    if interrupted is not None:
        raise interrupted
    return summary
