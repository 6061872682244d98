"""`tierline bench run | report | compare | export | import-log`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tierline.bench.workload import BenchError


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="replay a workload against targets: latency, "
                       "validated quality, cost per useful response")
    bs = p.add_subparsers(dest="bench_command", required=True, metavar="SUBCOMMAND")

    r = bs.add_parser("run", help="run a workload against one or more targets")
    r.add_argument("workload", help="JSONL workload file")
    r.add_argument("--target", action="append", required=True,
                   help="model / tier / policy on the in-process gateway (auto?max_loss=0.05) "
                   "or URL#MODEL; repeatable")
    r.add_argument("--out", required=True, help="run directory")
    r.add_argument("--config", help="gateway config for in-process targets")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=1, help="closed loop (default 1)")
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--replay", action="store_true", help="replay at logged timestamps")
    r.add_argument("--poisson", action="store_true", help="with --rate: Poisson arrivals")
    r.add_argument("--speedup", type=float, default=1.0, help="with --replay")
    r.add_argument("--warmup", type=int, default=0, help="warm-up requests per target")
    r.add_argument("--duration", type=float, help="stop sending after S seconds (cycles "
                   "the workload until then)")
    r.add_argument("--sample", type=int, help="use N items (fixed seed)")
    r.add_argument("--stratify", help="with --sample: field to stratify on, e.g. task")
    r.add_argument("--judge", help="judge target for 'judge' checks")
    r.add_argument("--check", action="append", default=[],
                   help="default check (JSON) for items without checks; repeatable")
    r.add_argument("--price", action="append", default=[],
                   help="IN,OUT or TARGET=IN,OUT in USD per 1M tokens, for servers that do "
                   "not report usage.cost_usd")
    r.add_argument("--slo-ttft-ms", type=float, default=1000.0)
    r.add_argument("--slo-e2e-ms", type=float)
    r.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.set_defaults(func=cmd_run)

    rp = bs.add_parser("report", help="(re)build summary.md and report.html")
    rp.add_argument("runs", nargs="+", help="run directories")
    rp.add_argument("-o", "--out", help="output directory (default: the run, if one)")
    rp.set_defaults(func=cmd_report)

    c = bs.add_parser("compare", help="before/after table of two runs")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.set_defaults(func=cmd_compare)

    e = bs.add_parser("export", help="routing-outcomes JSONL from a checked run")
    e.add_argument("run")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--source", help="source name (default bench-<run dir name>)")
    e.add_argument("--split", default="train", choices=("train", "test"))
    e.set_defaults(func=cmd_export)

    i = bs.add_parser("import-log", help="a workload from the gateway's request log")
    i.add_argument("log", help="requests.sqlite3")
    i.add_argument("-o", "--output", required=True)
    i.add_argument("--only-ok", action="store_true", help="only requests that succeeded")
    i.add_argument("--model", help="set this model on every request")
    i.set_defaults(func=cmd_import_log)


def cmd_run(a: argparse.Namespace) -> int:
    from tierline.bench.runner import BenchOptions, run_bench
    from tierline.bench.workload import load_workload, sample

    try:
        checks = [json.loads(c) for c in a.check]
    except json.JSONDecodeError as e:
        raise BenchError(f"--check is not JSON: {e.msg}") from None
    if not all(isinstance(c, dict) for c in checks):
        raise BenchError("--check must be a JSON object")
    if a.poisson and a.rate is None:
        raise BenchError("--poisson needs --rate")
    if a.sample is not None and a.sample < 1:
        raise BenchError(f"--sample must be 1 or more, got {a.sample}")
    if a.stratify and a.sample is None:
        raise BenchError("--stratify needs --sample")
    items = load_workload(a.workload, checks)
    if a.sample is not None:
        items = sample(items, a.sample, a.stratify, a.seed)
    o = BenchOptions(items=items, targets=a.target, out=Path(a.out), config=a.config,
                     concurrency=a.concurrency, rate=a.rate, poisson=a.poisson,
                     replay=a.replay, speedup=a.speedup, warmup=a.warmup,
                     duration=a.duration, judge=a.judge, slo_ttft_ms=a.slo_ttft_ms,
                     slo_e2e_ms=a.slo_e2e_ms, prices=a.price, timeout=a.timeout,
                     progress=a.progress, seed=a.seed, workload_name=str(a.workload),
                     plots=not a.no_plots)
    try:
        summary = asyncio.run(run_bench(o))
    except KeyboardInterrupt:
        path = o.out / "summary.json"
        done = path.exists() and json.loads(path.read_text(encoding="utf-8"))["run"].get(
            "interrupted")
        print("tierline: interrupted: " + (f"the summary of the completed requests is in "
                                           f"{path}" if done else "no summary written"),
              file=sys.stderr)
        return 130
    print((o.out / "summary.md").read_text(encoding="utf-8"))
    for w in summary["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from tierline.bench.report import write_reports

    runs = [Path(r) for r in a.runs]
    if a.out is None and len(runs) > 1:
        raise BenchError("several runs: give -o/--out")
    out = Path(a.out) if a.out else runs[0]
    write_reports(runs, out)
    print(f"wrote {out / 'summary.md'} and {out / 'report.html'}")
    return 0


def _row(name: str, key: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    va, vb = get_path(a, key), get_path(b, key)
    delta = "-" if va is None or vb is None else f"{vb - va:+.6g}"
    ci_key = {"pass_rate": "pass_rate_ci", "goodput": "goodput_ci",
              "e2e_ms.p50": "e2e_ms.p50_ci", "ttft_ms.p50": "ttft_ms.p50_ci"}.get(key)
    overlap = ""
    if ci_key:
        from tierline.bench.stats import MIN_N, overlaps
        ov = overlaps(get_path(a, ci_key), get_path(b, ci_key))
        if min(a.get("n") or 0, b.get("n") or 0) < MIN_N:
            overlap = f"too few requests (n < {MIN_N})"
        elif ov is None:
            overlap = "no data"
        else:
            overlap = "yes (not significant)" if ov else "no (significant)"
    return [name, key, "-" if va is None else f"{va:.6g}", "-" if vb is None else f"{vb:.6g}",
            delta, overlap]


def get_path(t: dict[str, Any], key: str) -> Any:
    v: Any = t
    for k in key.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v


COMPARE_KEYS = ("n", "errors", "pass_rate", "ttft_ms.p50", "e2e_ms.p50", "e2e_ms.p95",
                "output_tokens_per_s", "cost_usd_total", "cost_per_useful_response",
                "goodput")


def compare_rows(run_a: Path, run_b: Path) -> list[list[str]]:
    try:
        sa = json.loads((run_a / "summary.json").read_text(encoding="utf-8"))["targets"]
        sb = json.loads((run_b / "summary.json").read_text(encoding="utf-8"))["targets"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise BenchError(f"cannot read summaries: {e}") from None
    common = [n for n in sa if n in sb]
    if not common:
        raise BenchError("the two runs have no target in common")
    return [_row(n, k, sa[n], sb[n]) for n in common for k in COMPARE_KEYS]


def cmd_compare(a: argparse.Namespace) -> int:
    rows = compare_rows(Path(a.run_a), Path(a.run_b))
    head = ["target", "metric", "A", "B", "delta (B-A)", "95% CIs overlap"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from tierline.bench.export import outcomes, write_jsonl

    res = outcomes(Path(a.run), a.source, a.split)
    if res.left_out:
        by = ", ".join(f"{k} x{v}" for k, v in sorted(res.left_out.items()))
        print(f"note: left out {sum(res.left_out.values())} requests that failed in "
              f"transport ({by}): no quality observed; {res.pairs_left_out} (item, target) "
              "pairs have no outcome", file=sys.stderr)
    if not res.lines:
        raise BenchError(f"{a.run} has no checked items to export")
    write_jsonl(res.lines, Path(a.output))
    print(f"wrote {len(res.lines)} routing-outcome lines to {a.output}")
    return 0


def cmd_import_log(a: argparse.Namespace) -> int:
    from tierline.bench.export import import_log, write_jsonl

    lines, skipped = import_log(Path(a.log), a.only_ok, a.model)
    write_jsonl(lines, Path(a.output))
    print(f"wrote {len(lines)} workload items to {a.output}")
    if skipped:
        print(f"note: {skipped} logged requests have no prompt (enable server.log_prompts)",
              file=sys.stderr)
    return 0
