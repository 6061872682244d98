"""Workload files: JSONL, one item per line.

A line is either a bare OpenAI chat request body (`{"messages": [...], ...}`) or
`{"id", "request": {...}, "checks": [...], "timestamp", ...}`; other keys (e.g. `task`)
are kept in `meta` and can be used for stratified sampling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierline.errors import TierlineError


class BenchError(TierlineError):
    """A bad workload, target or option: one line on stderr, exit 2."""

    status = 400


@dataclass(slots=True)
class Item:
    id: str
    request: dict[str, Any]
    checks: list[dict[str, Any]] = field(default_factory=list)
    timestamp: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.request.get("messages")
        return msgs if isinstance(msgs, list) else []

    @property
    def prompt_text(self) -> str:
        out = []
        for m in self.messages:
            c = m.get("content")
            if isinstance(c, str):
                out.append(c)
            elif isinstance(c, list):
                out.extend(str(p.get("text", "")) for p in c if isinstance(p, dict))
        return "\n".join(out)

    def field_value(self, name: str) -> str:
        """A value for stratification: a meta key, a top-level request key or the model."""
        if name in self.meta:
            return str(self.meta[name])
        return str(self.request.get(name, ""))


def parse_item(obj: Any, lineno: int, default_checks: list[dict[str, Any]]) -> Item:
    if not isinstance(obj, dict):
        raise BenchError(f"workload line {lineno}: expected a JSON object")
    if "request" in obj:
        req = obj["request"]
        if not isinstance(req, dict):
            raise BenchError(f"workload line {lineno}: 'request' must be an object")
        checks = obj.get("checks")
        if not checks:  # missing or empty: the workload-level defaults (--check)
            checks = list(default_checks)
        if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
            raise BenchError(f"workload line {lineno}: 'checks' must be a list of objects")
        ts = obj.get("timestamp")
        meta = {k: v for k, v in obj.items()
                if k not in ("id", "request", "checks", "timestamp")}
        item = Item(id=str(obj.get("id", f"item-{lineno}")), request=dict(req),
                    checks=checks, timestamp=float(ts) if ts is not None else None,
                    meta=meta)
    else:
        item = Item(id=f"item-{lineno}", request=dict(obj), checks=list(default_checks))
    if not item.messages:
        raise BenchError(f"workload line {lineno}: the request has no 'messages'")
    return item


def load_workload(path: str | Path, default_checks: list[dict[str, Any]] | None = None
                  ) -> list[Item]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise BenchError(f"cannot read workload {p}: {e.strerror}") from None
    items: list[Item] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchError(f"workload line {n}: invalid JSON ({e.msg})") from None
        item = parse_item(obj, n, default_checks or [])
        if item.id in seen:
            raise BenchError(f"workload line {n}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise BenchError(f"workload {p} is empty")
    return items


def sample(items: list[Item], n: int, stratify: str | None = None, seed: int = 0
           ) -> list[Item]:
    """`n` items, at random with a fixed seed; proportionally per stratum when asked.
    The original order is kept."""
    import numpy as np

    if n >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    if not stratify:
        idx = sorted(rng.choice(len(items), size=n, replace=False).tolist())
        return [items[i] for i in idx]
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.field_value(stratify), []).append(i)
    # largest-remainder allocation, at least one per stratum while n allows
    keys = sorted(groups)
    quotas = {k: n * len(groups[k]) / len(items) for k in keys}
    alloc = {k: int(quotas[k]) for k in keys}
    rest = n - sum(alloc.values())
    for k in sorted(keys, key=lambda k: quotas[k] - alloc[k], reverse=True)[:rest]:
        alloc[k] += 1
    chosen: list[int] = []
    for k in keys:
        g = groups[k]
        take = min(alloc[k], len(g))
        chosen.extend(rng.choice(g, size=take, replace=False).tolist())
    return [items[i] for i in sorted(chosen)]
