"""The request log writer: batches of any size land exactly once, with their types."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierline.accounting import logdb as request_log
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
    sql = request_log.insert_rows(request_log.ROWS_PER_STATEMENT)
    assert sql.count("?") == request_log.ROWS_PER_STATEMENT * len(request_log.COLUMNS)
    assert sql.count("?") <= 32766


def _count(db: Path) -> int:
    return len(list(read_rows(db)))


async def _wait_count(db: Path, n: int, timeout: float = 10.0) -> int:
    import asyncio
    import time

    end = time.monotonic() + timeout
    got = _count(db)
    while got < n and time.monotonic() < end:
        await asyncio.sleep(0.02)
        got = _count(db)
    return got


async def test_rows_land_while_the_gateway_runs_without_close(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.01)
    try:
        for i in range(50):
            log.write(rec(i))
        assert await _wait_count(db, 50) == 50  # flushed by the loop timer, not by close()
    finally:
        log.close()
    assert log.written == 50


async def test_a_dead_writer_process_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.01)
    try:
        log.write(rec(0))
        assert await _wait_count(db, 1) == 1
        first = log._proc
        first.kill()
        first.wait()
        for i in range(1, 40):
            log.write(rec(i))
        assert await _wait_count(db, 40) == 40
        assert log._proc.pid != first.pid
    finally:
        log.close()


def test_the_writer_runs_at_a_lower_priority(tmp_path: Path) -> None:
    import os

    log = RequestLog(tmp_path / "r.sqlite3")
    try:
        assert _wait_nice(log._proc.pid) > os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        log.close()


def _wait_nice(pid: int) -> int:
    import os
    import time

    for _ in range(200):  # the child lowers its priority as its first step
        n = os.getpriority(os.PRIO_PROCESS, pid)
        if n > os.getpriority(os.PRIO_PROCESS, 0):
            return n
        time.sleep(0.01)
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_a_row_that_cannot_be_encoded_is_dropped_alone(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.2)
    log.write(rec(1))
    log.write(rec(2, error="lone surrogate \ud800"))
    log.write(rec(3))
    log.close()
    assert [r["id"] for r in read_rows(db)] == ["req-00001", "req-00003"]
    assert log.failed == 1
