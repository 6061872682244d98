"""The request log's table: schema, row type, batch insert, reading. Kept light (no
asyncio) because the writer process imports it."""

from __future__ import annotations

import logging
import operator
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

log = logging.getLogger("tierline.log")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    key_id TEXT,
    requested_model TEXT,
    deployment TEXT,
    provider TEXT,
    route TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    cost_pico INTEGER NOT NULL DEFAULT 0,
    estimated INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL,
    error TEXT,
    latency_ms REAL,
    ttft_ms REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    route_detail TEXT,
    prompt TEXT,
    response TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
"""


@dataclass(slots=True)
class LogRecord:
    id: str
    ts: float
    status: int
    key_id: str | None = None
    requested_model: str | None = None
    deployment: str | None = None
    provider: str | None = None
    route: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_pico: int = 0
    estimated: bool = False
    error: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int = 1
    route_detail: str | None = None  # JSON: candidates, filtered out with reasons, scores
    prompt: str | None = None  # only with log_prompts
    response: str | None = None  # only with log_prompts


COLUMNS = [f.name for f in fields(LogRecord)]
ROW = operator.attrgetter(*COLUMNS)
_ONE = f"({', '.join('?' for _ in COLUMNS)})"
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES {_ONE}"
ROWS_PER_STATEMENT = 128  # x 23 columns: far below SQLite's 32,766 bound parameters


@lru_cache(maxsize=ROWS_PER_STATEMENT)
def insert_rows(n: int) -> str:
    """`INSERT ... VALUES` with `n` row placeholders (cached: SQLite caches the plan)."""
    return _INSERT + (", " + _ONE) * (n - 1)


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


def insert_batch(conn: sqlite3.Connection, rows: list[tuple[Any, ...]] | list[list[Any]]
                 ) -> tuple[int, int]:
    """Insert rows (in `COLUMNS` order); returns (written, failed). A failing batch is
    retried row by row, so one bad row (say, a duplicate id) cannot lose the others."""
    try:
        with conn:
            for i in range(0, len(rows), ROWS_PER_STATEMENT):
                part = rows[i:i + ROWS_PER_STATEMENT]
                conn.execute(insert_rows(len(part)), list(chain.from_iterable(part)))
        return len(rows), 0
    except sqlite3.Error:
        written = failed = 0
        for t in rows:
            try:
                with conn:
                    conn.execute(_INSERT, t)
                written += 1
            except sqlite3.Error as e:
                failed += 1
                log.error("request log: could not write request %s: %s", t[0], e)
        return written, failed


def read_rows(path: Path, where: str = "", params: tuple[Any, ...] = ()
              ) -> Iterator[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        for row in conn.execute(f"SELECT * FROM requests {where} ORDER BY ts", params):
            yield dict(row)
    finally:
        conn.close()
