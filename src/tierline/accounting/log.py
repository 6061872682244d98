"""The request log: one row per client request, written exactly once.

The event loop only appends a tuple per request; every `interval` (50 ms) the batch goes,
as one JSON line, down a pipe to a writer *process* (`log_writer.py`, niced) that inserts it
into SQLite in WAL mode. The request id is the primary key, so a row can never be written
twice; `close()` flushes, ends the pipe and waits for the writer.

Why a process: with a writer thread, SQLite work ran under the same GIL as the event loop;
each hand-off could stall the loop behind a thread the OS had just preempted (the c = 1 p99
tail in docs/performance.md). A batch is inserted with multi-row `INSERT ... VALUES`
statements (one bind and one step per up to 128 rows), ~15 % cheaper than `executemany`.
Without a running event loop (scripts, tests) every `write()` is sent at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tierline.accounting.logdb import (
    COLUMNS,
    ROW,
    SCHEMA,
    LogRecord,
    connect,
    insert_batch,
    read_rows,
)

__all__ = ["COLUMNS", "SCHEMA", "LogRecord", "RequestLog", "connect", "insert_batch",
           "read_rows"]

log = logging.getLogger("tierline.log")

_PIPE_BYTES = 1 << 20  # ask for a 1 MiB pipe (Linux); the default 64 KiB is ~250 rows


class RequestLog:
    """Batched SQLite request log written by a child process. `write()` never blocks."""

    def __init__(self, path: Path, *, batch: int = 512, interval: float = 0.05) -> None:
        self.path = path
        self._batch = batch
        self._interval = interval
        self._rows: list[tuple[Any, ...]] = []
        self._pending = bytearray()  # encoded, not yet taken by the pipe
        self._timer: asyncio.TimerHandle | None = None
        self._written = 0
        self._failed = 0
        connect(path).close()  # the table exists (and the path is writable) from now on
        self._proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tierline.accounting.log_writer", str(self.path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        try:
            fcntl.fcntl(fd, 1031, _PIPE_BYTES)  # F_SETPIPE_SZ
        except OSError:
            pass
        os.set_blocking(fd, False)
        return proc

    @property
    def written(self) -> int:
        """Rows the writer confirmed (known after `close()`)."""
        return self._written

    @property
    def failed(self) -> int:
        return self._failed

    def write(self, rec: LogRecord) -> None:
        self._rows.append(ROW(rec))
        if len(self._rows) >= self._batch:
            self._flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()
                return
            self._timer = loop.call_later(self._interval, self._flush)

    def _encode(self, rows: list[tuple[Any, ...]]) -> bytes:
        try:
            return orjson.dumps(rows) + b"\n"
        except TypeError:  # a value orjson refuses (e.g. a lone surrogate): row by row
            good = []
            for r in rows:
                try:
                    orjson.dumps(r)
                    good.append(r)
                except TypeError:
                    self._failed += 1
                    log.error("request log: could not encode request %s", r[0])
            return orjson.dumps(good) + b"\n"

    def _flush(self) -> None:
        self._timer = None
        if self._rows:
            self._pending += self._encode(self._rows)
            self._rows = []
        if self._pending:
            self._send()

    def _send(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            n = os.write(stdin.fileno(), self._pending)
            del self._pending[:n]
        except BlockingIOError:
            pass
        except (BrokenPipeError, OSError) as e:
            log.error("request log: the writer process stopped (%s); restarting it", e)
            self._reap()
            self._proc = self._spawn()
            return self._retry_later()
        if self._pending:
            self._retry_later()

    def _retry_later(self) -> None:
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self._interval,
                                                                     self._flush)
            except RuntimeError:
                pass  # no loop: the next write() or close() sends it

    def _reap(self) -> None:
        proc = self._proc
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.stdin = None  # communicate() must not flush it
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        try:
            summary = orjson.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except (orjson.JSONDecodeError, IndexError):
            summary = {}
        self._written += int(summary.get("written", 0))
        self._failed += int(summary.get("failed", 0))

    def close(self) -> None:
        """Send everything, end the pipe and wait for the writer to finish."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._rows:
            self._pending += self._encode(self._rows)
            self._rows = []
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            os.set_blocking(stdin.fileno(), True)
            try:
                while self._pending:
                    n = os.write(stdin.fileno(), self._pending)
                    del self._pending[:n]
            except OSError as e:
                log.error("request log: %d bytes not written: %s", len(self._pending), e)
        self._reap()


