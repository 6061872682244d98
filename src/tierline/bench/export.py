"""Moving data in and out of bench runs: routing-outcomes JSONL for `tierline router
train` (see /work/shared/routing-data/README.md) from a checked run, and a workload from
the gateway's request log (SQLite table `requests`, prompts when prompt logging is on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


def transport_failure(rec: dict[str, Any]) -> bool:
    """A request that failed in delivery - HTTP 5xx / 408 / 429, a timeout, a refused or
    reset connection, a stream error or a truncated stream: it says nothing about the
    quality of the target's answer. (Other 4xx, the target rejecting the request itself,
    e.g. a prompt over its context window, are a real "cannot serve this": score 0.)"""
    if rec["ok"]:
        return False
    cls = str(rec.get("error_class") or "")
    if cls.startswith("http_"):
        status = int(cls[5:]) if cls[5:].isdigit() else 0
        return status >= 500 or status in (408, 429)
    return True


@dataclass
class Outcomes:
    lines: list[dict[str, Any]]
    left_out: dict[str, int] = field(default_factory=dict)  # failed requests by class
    pairs_left_out: int = 0  # (item, target) pairs with no delivered request


def outcomes(run_dir: Path, source: str | None = None, split: str = "train") -> Outcomes:
    """One routing-outcomes line per checked item: score = share of that target's
    (non-warm-up) delivered requests for the item that passed, cost_usd = mean spend
    (judge included). Transport failures (`transport_failure`) are no quality
    observation: they are left out, and an (item, target) pair with nothing else has no
    outcome (the format allows sparse outcomes); `left_out` counts them."""
    if split not in ("train", "test"):
        raise BenchError("--split must be train or test")
    items = _items(run_dir)
    src = source or f"bench-{run_dir.name}"
    acc: dict[str, dict[str, list[tuple[float, float]]]] = {}
    res = Outcomes(lines=[])
    for r in read_records(run_dir):
        if r["warmup"] or not r.get("checked"):
            continue
        per = acc.setdefault(r["item_id"], {}).setdefault(r["target"], [])
        if transport_failure(r):
            cls = str(r["error_class"])
            res.left_out[cls] = res.left_out.get(cls, 0) + 1
            continue
        cost = float(r["cost_usd"]) + float(r.get("judge_cost_usd") or 0.0)
        per.append((1.0 if r["passed"] else 0.0, cost))
    for item_id, item in items.items():
        per_target = acc.get(item_id) or {}
        res.pairs_left_out += sum(1 for v in per_target.values() if not v)
        outc = {t: {"score": sum(s for s, _ in v) / len(v),
                    "cost_usd": sum(c for _, c in v) / len(v)}
                for t, v in per_target.items() if v}
        if not outc:
            continue
        msgs = item["request"].get("messages") or []
        res.lines.append({
            "id": f"{src}/{item_id}", "source": src, "task": str(item.get("task") or src),
            "split": split, "messages": msgs, "outcomes": outc})
    return res


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
