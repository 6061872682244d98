"""The request log: one row per client request, written exactly once.

Rows are handed to a writer thread through a queue (O(1) on the hot path) and inserted
in batches into SQLite in WAL mode; the request id is the primary key, so a row can never
be written twice. `close()` drains the queue.

The writer thread cannot be killed by a row: a row SQLite refuses (an integer beyond its
64-bit range is stored clamped, anything else is dropped) is logged with its request id and
the others are written. A batch that meets a locked or busy database (another process holding
a long write transaction, a full disk) is kept and retried with backoff rather than dropped;
rows waiting (queued or kept for a retry) are bounded by `max_pending`: beyond it new rows are
dropped, with an error log, rather than grow the memory without bound.

A batch goes to SQLite as multi-row `INSERT ... VALUES (...), (...), ...` statements, not
`executemany`: executemany hands the GIL back and forth once per row (bind under the GIL,
step without it), and every hand-off can stall the event loop behind a writer thread that
the OS has just preempted while holding the GIL. One statement per up to 128 rows binds in
one C call and steps once with the GIL released (and is ~15 % cheaper).
"""

from __future__ import annotations

import logging
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

from tierline.errors import ConfigError

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
_ROW = operator.attrgetter(*COLUMNS)
_ONE = f"({', '.join('?' for _ in COLUMNS)})"
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES {_ONE}"
_ROWS_PER_STATEMENT = 128  # x 23 columns: far below SQLite's 32,766 bound parameters


# statement sizes: powers of two, so SQLite's statement cache holds 8 plans, not one per
# batch size (a prepared 128-row INSERT is ~100 KB; one per size grew the RSS by 20 MB)
_SIZES = tuple(1 << k for k in range(_ROWS_PER_STATEMENT.bit_length() - 1, -1, -1))


def _pieces(n: int) -> list[tuple[int, int]]:
    """(offset, size) of the statements for `n` rows: full 128s, then the binary digits."""
    out: list[tuple[int, int]] = []
    i = 0
    for size in _SIZES:
        while n - i >= size:
            out.append((i, size))
            i += size
    return out


@lru_cache(maxsize=len(_SIZES))
def _insert_rows(n: int) -> str:
    """`INSERT ... VALUES` with `n` row placeholders (cached: SQLite caches the plan)."""
    return _INSERT + (", " + _ONE) * (n - 1)


_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1  # SQLite's INTEGER range


def _clamp(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """`row` with every integer outside SQLite's 64-bit range clamped into it."""
    return tuple(min(max(v, _INT_MIN), _INT_MAX)
                 if isinstance(v, int) and not _INT_MIN <= v <= _INT_MAX else v for v in row)


#: SQLite result codes (primary) that a later attempt can succeed after
_TRANSIENT = {5, 6, 10, 13}  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL


def _transient(e: BaseException) -> bool:
    if not isinstance(e, sqlite3.OperationalError):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _TRANSIENT
    text = str(e)
    return "locked" in text or "busy" in text  # pragma: no cover - Python < 3.11


def sqlite_ro_uri(path: str | Path) -> str:
    """A read-only SQLite URI for `path`, whatever characters it holds (`#`, `?`, `%`, spaces
    are percent-quoted: an unquoted `#` or `?` would cut the path short)."""
    return Path(path).expanduser().absolute().as_uri() + "?mode=ro"


def connect(path: Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    """Open (creating it if needed) the request log at `path`; ConfigError naming the file
    when it cannot be (a parent that is a file, a directory in its place, no permission)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=timeout)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
    except (OSError, sqlite3.Error) as e:
        if isinstance(e, FileExistsError | NotADirectoryError):
            reason = f"{e.filename or path.parent} is not a directory"
        elif isinstance(e, OSError):
            reason = e.strerror or str(e)
        elif path.is_dir():
            reason = "it is a directory"
        else:
            reason = str(e)
        raise ConfigError(f"cannot open request log {path}: {reason}") from None
    return conn


class RequestLog:
    """Batched, thread-backed SQLite writer. `write()` never blocks on disk."""

    def __init__(self, path: Path, *, batch: int = 512, interval: float = 0.05,
                 max_pending: int = 100_000, busy_timeout: float = 30.0,
                 retry_min: float = 0.5, retry_max: float = 30.0) -> None:
        self.path = path
        self._batch = batch
        self._interval = interval
        self._max_pending = max_pending
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._q: queue.SimpleQueue[LogRecord | None] = queue.SimpleQueue()
        self._conn = connect(path, timeout=busy_timeout)
        self._written = 0
        self._failed = 0
        self._dropped = 0  # refused by `write()`: too many rows waiting
        self._drop_logged = 0.0
        # rows taken off the queue whose write met a locked / busy database: retried
        self._pending: list[LogRecord] = []
        self._pending_n = 0
        self._retry_at = 0.0
        self._backoff = retry_min
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tierline-request-log",
                                        daemon=True)
        self._thread.start()

    @property
    def written(self) -> int:
        return self._written

    @property
    def failed(self) -> int:
        """Rows lost: refused by SQLite, dropped when too many were waiting, or still
        unwritten at `close()`."""
        return self._failed + self._dropped

    @property
    def pending(self) -> int:
        """Rows waiting: queued, or kept for a retry."""
        return self._q.qsize() + self._pending_n

    def write(self, rec: LogRecord) -> None:
        if self._q.qsize() + self._pending_n >= self._max_pending:
            self._drop(rec)
            return
        self._q.put(rec)

    def _drop(self, rec: LogRecord) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._drop_logged >= 10.0:  # at most one line per 10 s, not one per request
            self._drop_logged = now
            log.error("request log %s: %d rows waiting (the database has not accepted writes "
                      "for a while); request %s is not logged (%d dropped so far)",
                      self.path, self.pending, rec.id, self._dropped)

    def _drain(self, first: LogRecord | None, limit: int) -> tuple[list[LogRecord], bool]:
        rows = [first] if first is not None else []
        stop = False
        while len(rows) < limit:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            rows.append(item)
        return rows, stop

    def _run(self) -> None:
        while True:
            try:
                if self._cycle():
                    return
            except Exception:  # a bug must not stop the log for good: report it, go on
                log.exception("request log %s: writer error (continuing)", self.path)
                self._wake.wait(max(self._interval, 0.01))

    def _cycle(self) -> bool:
        """Write one batch (or retry the kept one); True when the writer should stop."""
        if self._pending:
            wait = self._retry_at - time.monotonic()
            if wait > 0 and not self._stopping:
                self._wake.wait(wait)  # close() wakes it
                return False
            rows, self._pending = self._pending, []
            more, stop = self._drain(None, self._batch)
            rows += more
            self._pending_n = len(rows)  # still waiting while this attempt blocks
        else:
            item = self._q.get()
            if item is None:
                return True
            if self._q.qsize() < self._batch:
                # let rows accumulate: one transaction per interval, not one per request
                # (this thread competes for the GIL with the event loop)
                time.sleep(self._interval)
            rows, stop = self._drain(item, self._batch)
        self._insert(rows)
        if not self._pending:
            self._pending_n = 0
        elif self._stopping:  # closing and the database is still locked: one try was it
            while True:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    self._pending.append(item)
            stop = True
        if stop:
            if self._pending:
                self._failed += len(self._pending)
                log.error("request log %s: closing with %d rows unwritten (the database "
                          "stayed locked): requests %s", self.path, len(self._pending),
                          _ids(self._pending))
                self._pending, self._pending_n = [], 0
            return True
        return False

    def _keep(self, rows: list[LogRecord], e: BaseException) -> None:
        """Keep `rows` for a retry after a backoff (the database is locked / busy)."""
        self._pending = rows + self._pending
        excess = len(self._pending) - self._max_pending
        if excess > 0:  # the bound holds for kept rows too: the oldest go
            self._dropped += excess
            log.error("request log %s: %d rows waiting; the %d oldest are not logged "
                      "(requests %s)", self.path, len(self._pending), excess,
                      _ids(self._pending[:excess]))
            del self._pending[:excess]
        self._pending_n = len(self._pending)
        self._retry_at = time.monotonic() + self._backoff
        log.warning("request log %s: %s; %d rows kept, retrying in %.1f s", self.path, e,
                    len(self._pending), self._backoff)
        self._backoff = min(self._retry_max, self._backoff * 2)

    def _rollback(self) -> None:
        try:
            self._conn.rollback()
        except sqlite3.Error:  # pragma: no cover - nothing to roll back
            pass

    def _insert(self, rows: list[LogRecord]) -> None:
        tuples = [_ROW(r) for r in rows]
        try:
            with self._conn:
                for i, n in _pieces(len(tuples)):
                    self._conn.execute(_insert_rows(n),
                                       list(chain.from_iterable(tuples[i:i + n])))
            self._written += len(rows)
            self._backoff = self._retry_min
            return
        except Exception as e:  # any row can fail to bind (OverflowError, ...)
            self._rollback()
            if _transient(e):
                self._keep(rows, e)
                return
        # fall back to one by one so one bad row cannot lose a batch
        for k, t in enumerate(tuples):
            try:
                self._insert_one(t)
            except sqlite3.OperationalError as e:
                if not _transient(e):
                    raise  # pragma: no cover - _insert_one handles the rest
                self._keep(rows[k:], e)
                return
        self._backoff = self._retry_min

    def _insert_one(self, t: tuple[Any, ...]) -> None:
        """Write one row; a row SQLite cannot take is clamped or dropped, with an error log
        naming its request id. Raises only for a transient error (locked, busy)."""
        try:
            with self._conn:
                self._conn.execute(_INSERT, t)
            self._written += 1
            return
        except OverflowError as e:
            self._rollback()
            clamped = _clamp(t)
            try:
                with self._conn:
                    self._conn.execute(_INSERT, clamped)
            except Exception as e2:
                self._rollback()
                if _transient(e2):
                    raise
                self._failed += 1
                log.error("request log: could not write request %s: %s", t[0], e2)
                return
            self._written += 1
            log.error("request log: request %s had a number beyond SQLite's 64-bit range "
                      "(%s); written clamped", t[0], e)
        except Exception as e:
            self._rollback()
            if _transient(e):
                raise
            self._failed += 1
            log.error("request log: could not write request %s: %s", t[0], e)

    def close(self) -> None:
        """Flush everything queued (one more try for rows kept after a locked database)
        and stop the writer."""
        if self._thread.is_alive():
            self._stopping = True
            self._q.put(None)
            self._wake.set()
            self._thread.join()
        self._conn.close()


def _ids(rows: Sequence[LogRecord], n: int = 10) -> str:
    head = ", ".join(r.id for r in rows[:n])
    return head + (f" and {len(rows) - n} more" if len(rows) > n else "")


def read_rows(path: Path, where: str = "", params: tuple[Any, ...] = ()
              ) -> Iterator[dict[str, Any]]:
    conn = sqlite3.connect(sqlite_ro_uri(path), uri=True)
    conn.row_factory = sqlite3.Row
    try:
        for row in conn.execute(f"SELECT * FROM requests {where} ORDER BY ts", params):
            yield dict(row)
    finally:
        conn.close()
