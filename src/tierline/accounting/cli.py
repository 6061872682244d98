"""`tierline spend`: totals from the request log by model / provider / key / day."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tierline.accounting.log import sqlite_ro_uri
from tierline.accounting.pricing import usd
from tierline.config import load_config
from tierline.errors import ConfigError

GROUPS = {
    "model": "COALESCE(deployment, '-')",
    "provider": "COALESCE(provider, '-')",
    "key": "COALESCE(key_id, '-')",
    "day": "date(ts, 'unixepoch')",
}


def register(sub: Any) -> None:
    p = sub.add_parser("spend", help="spend totals from the request log")
    p.add_argument("--by", choices=sorted(GROUPS), default="model")
    p.add_argument("--config", default=None, help="config file (for the request-log path)")
    p.add_argument("--log", default=None, help="request-log SQLite file")
    p.add_argument("--since", default=None, help="only requests on or after this date or date-time "
                   "(ISO, e.g. 2025-01-31; UTC unless an offset is given)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_spend)


def parse_since(text: str) -> float:
    """`--since` as a Unix time: an ISO date or date-time (`2025-01-31`,
    `2025-01-31T12:00`, with an optional UTC offset; UTC when none)."""
    try:
        d = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since expects a date like 2025-01-31 or 2025-01-31T12:00 "
                          f"(UTC), got {text!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def spend(path: Path, by: str, since: str | None = None) -> list[dict[str, Any]]:
    where: str = ""
    params: tuple[float, ...] = ()
    if since:
        where, params = "WHERE ts >= ?", (parse_since(since),)
    if not path.exists():
        raise ConfigError(f"no request log at {path}")
    try:
        conn = sqlite3.connect(sqlite_ro_uri(path), uri=True)
        try:
            rows = conn.execute(
                f"SELECT {GROUPS[by]} AS g, COUNT(*), SUM(status >= 400), "
                f"SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_pico), "
                f"SUM(estimated) FROM requests {where} "
                f"GROUP BY g ORDER BY SUM(cost_pico) DESC, g", params).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise ConfigError(f"{path} is not a tierline request log ({e})") from None
    return [{by: g, "requests": n, "errors": e or 0, "prompt_tokens": pt or 0,
             "completion_tokens": ct or 0, "cost_usd": usd(int(c or 0)),
             "cost_pico": int(c or 0), "estimated_rows": est or 0}
            for g, n, e, pt, ct, c, est in rows]


def cmd_spend(args: argparse.Namespace) -> int:
    path = Path(args.log) if args.log else load_config(args.config).request_log_path()
    rows = spend(path, args.by, args.since)
    total = sum(r["cost_pico"] for r in rows)
    if args.json:
        sys.stdout.write(orjson.dumps({"by": args.by, "rows": rows,
                                       "total_cost_usd": usd(total)}).decode() + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"spend by {args.by} ({path})")
    for col in (args.by, "requests", "errors", "prompt tok", "completion tok", "cost USD"):
        t.add_column(col, justify="left" if col == args.by else "right")
    for r in rows:
        cost = r["cost_usd"] + (" *" if r["estimated_rows"] else "")
        t.add_row(str(r[args.by]), str(r["requests"]), str(r["errors"]),
                  str(r["prompt_tokens"]), str(r["completion_tokens"]), cost)
    t.add_row("total", str(sum(r["requests"] for r in rows)), "", "", "", usd(total))
    Console().print(t)
    if any(r["estimated_rows"] for r in rows):
        print("* includes costs estimated from locally counted tokens")
    return 0
