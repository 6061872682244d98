"""Moving data in and out of bench runs: routing-outcomes JSONL for `tierline router
train` (see /work/shared/routing-data/README.md) from a checked run, and a workload from
the gateway's request log (SQLite table `requests`, prompts when prompt logging is on).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tierline.bench.stats import read_records
from tierline.bench.workload import BenchError


def _items(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / "items.jsonl"
    try:
        with path.open(encoding="utf-8") as f:
            return {o["id"]: o for o in (json.loads(x) for x in f if x.strip())}
    except OSError as e:
        raise BenchError(f"{run_dir} is not a bench run directory: {e.strerror}") from None


def outcomes(run_dir: Path, source: str | None = None, split: str = "train"
             ) -> list[dict[str, Any]]:
    """One routing-outcomes line per checked item: score = share of that target's
    (non-warm-up) requests for the item that passed, cost_usd = mean spend (judge
    included)."""
    if split not in ("train", "test"):
        raise BenchError("--split must be train or test")
    items = _items(run_dir)
    src = source or f"bench-{run_dir.name}"
    acc: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in read_records(run_dir):
        if r["warmup"] or not r.get("checked"):
            continue
        cost = float(r["cost_usd"]) + float(r.get("judge_cost_usd") or 0.0)
        acc.setdefault(r["item_id"], {}).setdefault(r["target"], []).append(
            (1.0 if r["passed"] else 0.0, cost))
    lines = []
    for item_id, item in items.items():
        per = acc.get(item_id)
        if not per:
            continue
        msgs = item["request"].get("messages") or []
        lines.append({
            "id": f"{src}/{item_id}", "source": src, "task": str(item.get("task") or src),
            "split": split, "messages": msgs,
            "outcomes": {t: {"score": sum(s for s, _ in v) / len(v),
                             "cost_usd": sum(c for _, c in v) / len(v)}
                         for t, v in per.items()}})
    return lines


def write_jsonl(lines: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for obj in lines:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def import_log(log_path: Path, only_ok: bool = False, model: str | None = None
               ) -> tuple[list[dict[str, Any]], int]:
    """(workload lines in arrival order, rows skipped for lack of a logged prompt). An
    item's `timestamp` is the request's arrival: the logged completion time `ts` minus
    its `latency_ms`, so that `--replay` sends requests in the order they came."""
    import sqlite3

    from tierline.accounting.log import read_rows

    if not log_path.exists():
        raise BenchError(f"no request log at {log_path}")
    out: list[dict[str, Any]] = []
    skipped = 0
    try:
        rows = list(read_rows(log_path))
    except sqlite3.Error as e:
        raise BenchError(f"cannot read request log {log_path}: {e}") from None
    for row in rows:
        if only_ok and row.get("status") != 200:
            continue
        try:
            msgs = json.loads(row["prompt"]) if row.get("prompt") else None
        except json.JSONDecodeError:
            msgs = None
        if isinstance(msgs, dict):
            msgs = msgs.get("messages")
        if not isinstance(msgs, list) or not msgs:
            skipped += 1
            continue
        req: dict[str, Any] = {"messages": msgs}
        m = model or row.get("requested_model")
        if m:
            req["model"] = m
        if row.get("completion_tokens"):
            req["max_tokens"] = max(16, int(row["completion_tokens"]))
        # the log's ts is when the request finished: it arrived latency_ms earlier
        arrival = float(row["ts"]) - float(row.get("latency_ms") or 0.0) / 1000
        out.append({"id": str(row["id"]), "request": req, "checks": [],
                    "timestamp": round(arrival, 6),
                    "logged": {"deployment": row.get("deployment"),
                               "status": row.get("status"),
                               "latency_ms": row.get("latency_ms"),
                               "ttft_ms": row.get("ttft_ms")}})
    out.sort(key=lambda x: x["timestamp"])  # arrival order (the log is in finish order)
    return out, skipped
