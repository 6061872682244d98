"""The request log writer: batches of any size land exactly once, with their types."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierline.accounting import log as request_log
from tierline.accounting.log import LogRecord, RequestLog, read_rows


def rec(i: int, **kw: object) -> LogRecord:
    return LogRecord(id=f"req-{i:05d}", ts=1_700_000_000.0 + i, status=200, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 127, 128, 129, 300])
def test_every_row_lands_once_whatever_the_batch_size(tmp_path: Path, n: int) -> None:
    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.01)
    for i in range(n):
        log.write(rec(i, prompt_tokens=i, stream=bool(i % 2), cost_pico=10**15 + i))
    log.close()
    rows = list(read_rows(db))
    assert [r["id"] for r in rows] == [f"req-{i:05d}" for i in range(n)]
    assert [r["prompt_tokens"] for r in rows] == list(range(n))
    assert [r["stream"] for r in rows] == [i % 2 for i in range(n)]
    assert rows[-1]["cost_pico"] == 10**15 + n - 1
    assert log.written == n


def test_values_round_trip_with_their_types(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    log = RequestLog(db)
    log.write(rec(1, error='quote " newline \n é', latency_ms=1.25, ttft_ms=None,
                  estimated=True, route_detail='{"a": 1}', key_id="key_x"))
    log.close()
    (row,) = read_rows(db)
    assert row["error"] == 'quote " newline \n é'
    assert row["latency_ms"] == 1.25 and row["ttft_ms"] is None
    assert row["estimated"] == 1 and row["key_id"] == "key_x"
    assert row["route_detail"] == '{"a": 1}'


def test_a_bad_row_does_not_lose_its_batch(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.2)  # long enough for all three to share one batch
    log.write(rec(1))
    log.write(rec(1))  # same primary key: the batch statement fails, rows go one by one
    log.write(rec(2))
    log.close()
    assert [r["id"] for r in read_rows(db)] == ["req-00001", "req-00002"]
    assert log.written == 2


def test_statements_bind_at_most_the_sqlite_limit() -> None:
    sql = request_log._insert_rows(request_log._ROWS_PER_STATEMENT)
    assert sql.count("?") == request_log._ROWS_PER_STATEMENT * len(request_log.COLUMNS)
    assert sql.count("?") <= 32766


async def test_rows_land_while_the_gateway_runs_without_close(tmp_path: Path) -> None:
    import asyncio
    import time

    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.01)
    try:
        for i in range(50):
            log.write(rec(i))
        end = time.monotonic() + 10
        while len(list(read_rows(db))) < 50 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert len(list(read_rows(db))) == 50  # written by the thread, not by close()
    finally:
        log.close()


def test_batches_use_a_few_statement_sizes() -> None:
    for n in (1, 5, 100, 127, 128, 129, 300, 1000):
        pieces = request_log._pieces(n)
        assert sum(size for _, size in pieces) == n
        assert [off for off, _ in pieces] == [sum(s for _, s in pieces[:k])
                                             for k in range(len(pieces))]
        assert {size for _, size in pieces} <= set(request_log._SIZES)
    assert len(request_log._SIZES) == 8  # SQLite's statement cache stays small
