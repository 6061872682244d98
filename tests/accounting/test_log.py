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


def test_a_number_beyond_sqlite_range_neither_kills_the_writer_nor_loses_the_row(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """prompt_tokens = 10**19 once made the batch and its row-by-row fallback raise
    OverflowError (not a sqlite3.Error): the writer thread died, nothing was logged again."""
    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.05)
    log.write(rec(1))
    log.write(rec(2, prompt_tokens=10**19, cost_pico=-(10**30)))
    log.write(rec(3))
    import time
    time.sleep(0.3)
    assert log._thread.is_alive()
    for i in range(4, 8):
        log.write(rec(i))
    log.close()
    rows = {r["id"]: r for r in read_rows(db)}
    assert sorted(rows) == [f"req-{i:05d}" for i in range(1, 8)]
    assert rows["req-00002"]["prompt_tokens"] == 2**63 - 1  # clamped, and said so
    assert rows["req-00002"]["cost_pico"] == -(2**63)
    assert "req-00002" in caplog.text
    assert log.written == 7


def test_the_writer_survives_an_unexpected_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.01)
    calls = {"n": 0}
    real = RequestLog._insert

    def flaky(self: RequestLog, rows: list[LogRecord]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        real(self, rows)

    monkeypatch.setattr(RequestLog, "_insert", flaky)
    log.write(rec(1))
    import time
    time.sleep(0.2)
    log.write(rec(2))
    log.close()
    assert [r["id"] for r in read_rows(db)] == ["req-00002"]


def test_waiting_rows_are_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import sqlite3

    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.01, max_pending=50, busy_timeout=0.05, retry_min=0.05,
                     retry_max=0.1)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        for i in range(200):
            log.write(rec(i))
        assert log.pending <= 50
        assert log.failed == 150
        assert "not logged" in caplog.text
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    log.close()
    assert len(list(read_rows(db))) == 50


def test_a_locked_database_delays_rows_but_does_not_lose_them(tmp_path: Path) -> None:
    """`database is locked` for longer than the busy timeout used to drop the batch."""
    import sqlite3
    import time

    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.01, busy_timeout=0.05, retry_min=0.05, retry_max=0.2)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        for i in range(20):
            log.write(rec(i))
        time.sleep(1.0)  # many busy timeouts and retries
        assert log.written == 0 and log.failed == 0 and log.pending == 20
        assert log._thread.is_alive()
        for i in range(20, 30):
            log.write(rec(i))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    end = time.monotonic() + 10
    while log.written < 30 and time.monotonic() < end:
        time.sleep(0.02)
    assert log.written == 30  # landed while the gateway runs, not only at close()
    log.close()
    assert [r["id"] for r in read_rows(db)] == [f"req-{i:05d}" for i in range(30)]


def test_close_gives_up_on_a_database_that_stays_locked(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import sqlite3

    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, interval=0.01, busy_timeout=0.05, retry_min=0.05)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        log.write(rec(1))
        log.close()  # returns (bounded), naming what it could not write
        assert log.failed == 1 and "req-00001" in caplog.text
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


@pytest.mark.parametrize("name", ["x#y", "a?b", "p%41q", "sp ace"])
def test_read_rows_opens_paths_with_uri_characters(tmp_path: Path, name: str) -> None:
    db = tmp_path / name / "r.sqlite3"
    log = RequestLog(db)
    log.write(rec(1))
    log.close()
    assert [r["id"] for r in read_rows(db)] == ["req-00001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no stray file


@pytest.mark.parametrize("where", ["file", "dir"])
def test_a_request_log_that_cannot_be_opened_is_one_clear_error(tmp_path: Path,
                                                                where: str) -> None:
    from tierline.errors import ConfigError

    (tmp_path / "f").write_text("x")
    (tmp_path / "d.sqlite3").mkdir()
    path = tmp_path / "f" / "r.sqlite3" if where == "file" else tmp_path / "d.sqlite3"
    with pytest.raises(ConfigError, match=r"cannot open request log .*"):
        RequestLog(path)


def test_the_bound_holds_while_a_locked_database_is_retried(tmp_path: Path) -> None:
    """Rows taken off the queue for a blocked attempt still count as waiting, and a failed
    attempt keeps at most `max_pending` (rows piled up by a batch per failed retry)."""
    import sqlite3
    import time

    db = tmp_path / "r.sqlite3"
    log = RequestLog(db, batch=50, interval=0.001, max_pending=100, busy_timeout=0.1,
                     retry_min=0.01, retry_max=0.01)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    worst = 0
    try:
        end = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < end:
            log.write(rec(i))
            i += 1
            worst = max(worst, log._q.qsize() + len(log._pending))
            time.sleep(0.0005)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert worst <= 100 + 50, worst
    t0 = time.monotonic()
    log.close()
    assert time.monotonic() - t0 < 5
