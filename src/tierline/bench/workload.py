"""Workload files: JSONL, one item per line.

A line is either a bare OpenAI chat request body (`{"messages": [...], ...}`) or
`{"id", "request": {...}, "checks": [...], "timestamp", ...}`; other keys (e.g. `task`)
are kept in `meta` and can be used for stratified sampling.
"""

from __future__ import annotations

import json
import math
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


def _timestamp(ts: Any, where: str) -> float | None:
    if ts is None:
        return None
    try:
        if isinstance(ts, bool) or not isinstance(ts, int | float | str):
            raise ValueError
        x = float(ts)
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise BenchError(f"{where}: 'timestamp' must be a number (seconds), got {ts!r}")
    return x


def _validate_messages(msgs: Any, where: str) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise BenchError(f"{where}: the request has no 'messages'")
    for k, m in enumerate(msgs, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BenchError(f"{where}: message {k} must be an object with a 'role', "
                             f"got {json.dumps(m)[:60]}")
        if not isinstance(m.get("content"), str | list | None):
            raise BenchError(f"{where}: message {k}: 'content' must be a string or a list")


def parse_item(obj: Any, lineno: int, default_checks: list[dict[str, Any]]) -> Item:
    """One workload line, fully validated (checks included; the defaults are the caller's
    to validate), so that a bad line fails before any request is sent."""
    from tierline.bench.checks import validate_checks

    where = f"workload line {lineno}"
    if not isinstance(obj, dict):
        raise BenchError(f"{where}: expected a JSON object")
    if "request" in obj:
        req = obj["request"]
        if "id" in obj:
            where += f" (item {str(obj['id'])!r})"
        if not isinstance(req, dict):
            raise BenchError(f"{where}: 'request' must be an object")
        checks = obj.get("checks")
        own = bool(checks)
        if not checks:  # missing or empty: the workload-level defaults (--check)
            checks = list(default_checks)
        if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
            raise BenchError(f"{where}: 'checks' must be a list of objects")
        if own:
            validate_checks(checks, where)
        meta = {k: v for k, v in obj.items()
                if k not in ("id", "request", "checks", "timestamp")}
        item = Item(id=str(obj.get("id", f"item-{lineno}")), request=dict(req),
                    checks=checks, timestamp=_timestamp(obj.get("timestamp"), where),
                    meta=meta)
    else:
        item = Item(id=f"item-{lineno}", request=dict(obj), checks=list(default_checks))
    _validate_messages(item.request.get("messages"), where)
    return item


def load_workload(path: str | Path, default_checks: list[dict[str, Any]] | None = None
                  ) -> list[Item]:
    """The items of a JSONL workload (UTF-8, a leading BOM allowed), every line and
    check validated; `default_checks` (--check) apply to items without checks."""
    from tierline.bench.checks import validate_checks

    p = Path(path)
    validate_checks(default_checks or [], "--check")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise BenchError(f"cannot read workload {p}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BenchError(f"workload {p} is not UTF-8 ({e.reason} at byte {e.start})"
                         ) from None
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
    alloc = _allocate({k: len(g) for k, g in groups.items()}, n)
    chosen: list[int] = []
    for k in sorted(groups):
        chosen.extend(rng.choice(groups[k], size=alloc[k], replace=False).tolist())
    return [items[i] for i in sorted(chosen)]


def _allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """How many of `n` to take from each stratum: one from each while n allows (the
    largest strata first), the rest one at a time to the stratum furthest below its
    proportional share n * size / total, never more than it has."""
    total = sum(sizes.values())
    keys = sorted(sizes, key=lambda k: (-sizes[k], k))
    alloc = {k: 0 for k in keys}
    for k in keys[:n]:
        alloc[k] = 1
    for _ in range(n - sum(alloc.values())):
        open_ = [k for k in keys if alloc[k] < sizes[k]]
        k = max(open_, key=lambda k: n * sizes[k] / total - alloc[k])  # first on ties
        alloc[k] += 1
    return alloc
