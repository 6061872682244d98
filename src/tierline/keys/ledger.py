"""Budgets and RPM / TPM limits shared by the worker processes of one gateway.

With `tierline serve --workers N` every process runs its own app; the in-memory
:class:`~tierline.keys.budget.Budgets` and :class:`~tierline.keys.limits.Limits` would each
grant a key its whole budget and rate, N times over. Here the same check-and-record steps
run as one SQLite ``BEGIN IMMEDIATE`` transaction on a small ledger file that all workers
open (WAL; ``synchronous=OFF``: the ledger is rebuilt from the request log after a restart,
so it needs no durability). Only keys that have a budget or a limit touch it: one short
write transaction per admission and per settlement (tens of microseconds).

* Budget holds are rows tagged with the worker's pid: a worker that dies mid-request leaves
  holds that the next worker to open the ledger deletes (their pid is gone).
* The parent process calls :func:`reset` before starting the workers, so a restart reads
  spend afresh from the request log, as a single process does.
* It also carries each worker's metrics snapshot, so that ``/metrics`` (answered by whichever
  worker the scrape lands on) shows the totals of all of them, and the circuits a worker has
  opened, which the others apply within a second (``time.monotonic`` is one clock for every
  process of the machine).
* And each worker's live latency statistics (EWMAs and observation counts per deployment,
  for the ``fastest`` strategy): every worker publishes its own and reads the other live
  workers' once a second, so that they learn together which deployment is fastest.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tierline.config import Config
from tierline.keys.budget import Reservation, SpendSource, budget_pico, period_start, refusal
from tierline.keys.limits import WINDOW, Admission, rpm_refusal, tpm_refusal, tpm_too_big
from tierline.keys.store import KeyRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_spent (key_id TEXT PRIMARY KEY, start REAL NOT NULL,
                                         spent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS budget_holds (id INTEGER PRIMARY KEY, key_id TEXT NOT NULL,
                                         amount INTEGER NOT NULL, pid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS budget_holds_key ON budget_holds (key_id);
CREATE TABLE IF NOT EXISTS limit_events (key_id TEXT NOT NULL, ts REAL NOT NULL,
                                         tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS limit_events_key ON limit_events (key_id, ts);
CREATE TABLE IF NOT EXISTS breaker_opens (name TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS metrics_snapshots (pid INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS live_stats (pid INTEGER PRIMARY KEY, at REAL NOT NULL,
                                       data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS limit_totals (key_id TEXT PRIMARY KEY, n INTEGER NOT NULL,
                                         tokens INTEGER NOT NULL);
"""


STATS_MAX_AGE = 10.0  # seconds: live stats older than this are a dead or stuck worker's


def ledger_path(config: Config) -> Path:
    """Beside the key store: ``keys.sqlite3`` -> ``keys.ledger.sqlite3``."""
    keys = config.keys_path()
    return keys.with_name(keys.stem + ".ledger.sqlite3")


def reset(path: Path) -> None:
    """Start a ledger afresh (the parent, before the workers start)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """One connection to the shared ledger file (thread-safe through a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None,
                                     check_same_thread=False)
        # every worker opens the ledger at the same moment: take the write lock first (BEGIN
        # IMMEDIATE waits on the busy timeout) rather than let a schema statement fail busy
        for attempt in range(50):
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.02)
        self._conn.execute("PRAGMA synchronous=OFF")
        with self.transaction() as c:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            self._drop_dead_holds()

    def _drop_dead_holds(self) -> None:
        pids = [int(r[0]) for r in self._conn.execute("SELECT DISTINCT pid FROM budget_holds")]
        for pid in pids:
            if not _alive(pid):
                self._conn.execute("DELETE FROM budget_holds WHERE pid = ?", (pid,))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` when the block raises)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def publish_metrics(self, data: str) -> None:
        """This process's metrics snapshot (JSON), replacing its previous one."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO metrics_snapshots (pid, data) VALUES (?, ?)",
                      (os.getpid(), data))

    def metrics_snapshots(self) -> list[tuple[str, bool]]:
        """Every process's latest snapshot, and whether that process is alive."""
        with self._lock:
            rows = self._conn.execute("SELECT pid, data FROM metrics_snapshots").fetchall()
        return [(str(data), _alive(int(pid))) for pid, data in rows]

    def publish_stats(self, data: str, now: float | None = None,
                      max_age: float = STATS_MAX_AGE) -> None:
        """This process's live latency statistics (JSON), replacing its previous ones; rows
        not refreshed for `max_age` seconds (dead or stuck workers) are dropped."""
        now = time.monotonic() if now is None else now
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO live_stats (pid, at, data) VALUES (?, ?, ?)",
                      (os.getpid(), now, data))
            c.execute("DELETE FROM live_stats WHERE at < ?", (now - max_age,))

    def peer_stats(self, now: float | None = None,
                   max_age: float = STATS_MAX_AGE) -> list[str]:
        """The latest statistics of every other process that is alive and published within
        `max_age` seconds (``time.monotonic``)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            rows = self._conn.execute("SELECT pid, data FROM live_stats WHERE pid != ? "
                                      "AND at >= ?", (os.getpid(), now - max_age)).fetchall()
        return [str(data) for pid, data in rows if _alive(int(pid))]

    def breaker_opened(self, name: str, until: float) -> None:
        """A process opened `name`'s circuit until `until` (``time.monotonic``)."""
        with self.transaction() as c:
            c.execute("INSERT INTO breaker_opens (name, until) VALUES (?, ?) ON CONFLICT (name) "
                      "DO UPDATE SET until = max(until, excluded.until)", (name, until))

    def breaker_closed(self, name: str) -> None:
        """A process's half-open probe of `name` succeeded."""
        with self.transaction() as c:
            c.execute("DELETE FROM breaker_opens WHERE name = ?", (name,))

    def breaker_opens(self, now: float) -> list[tuple[str, float]]:
        """Circuits some process holds open past `now`."""
        with self._lock:
            rows = self._conn.execute("SELECT name, until FROM breaker_opens WHERE until > ?",
                                      (now,)).fetchall()
        return [(str(n), float(u)) for n, u in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SharedBudgets:
    """:class:`~tierline.keys.budget.Budgets` with its accounts in a :class:`Ledger`."""

    def __init__(self, ledger: Ledger, spend_source: SpendSource | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._ledger = ledger
        self._source = spend_source
        self._clock = clock
        self._pid = os.getpid()

    def _account(self, c: sqlite3.Connection, key: KeyRecord) -> tuple[float, int, int]:
        """(period start, spent, held) of the key, rolled over / loaded on demand."""
        start = period_start(key.period, self._clock())
        row = c.execute("SELECT start, spent FROM budget_spent WHERE key_id = ?",
                        (key.id,)).fetchone()
        if row is None or row[0] != start:
            spent = self._source(key.id, start) if self._source is not None else 0
            c.execute("INSERT OR REPLACE INTO budget_spent (key_id, start, spent) "
                      "VALUES (?, ?, ?)", (key.id, start, spent))
        else:
            spent = int(row[1])
        held = c.execute("SELECT COALESCE(SUM(amount), 0) FROM budget_holds WHERE key_id = ?",
                         (key.id,)).fetchone()[0]
        return start, spent, int(held)

    def reserve(self, key: KeyRecord, worst_pico: int) -> Reservation | None:
        budget = budget_pico(key)
        if budget is None:
            return None
        worst = max(0, int(worst_pico))
        with self._ledger.transaction() as c:
            start, spent, held = self._account(c, key)
            if spent + held + worst > budget:
                raise refusal(key, budget, spent, held, worst)
            cur = c.execute("INSERT INTO budget_holds (key_id, amount, pid) VALUES (?, ?, ?)",
                            (key.id, worst, self._pid))
            return Reservation(key_id=key.id, start=start, amount=worst,
                               hold_id=int(cur.lastrowid or 0))

    def settle(self, reservation: Reservation | None, actual_pico: int) -> None:
        if reservation is None or reservation.settled:
            return
        reservation.settled = True
        with self._ledger.transaction() as c:
            c.execute("DELETE FROM budget_holds WHERE id = ?", (reservation.hold_id,))
            # booked in the key's current account, as the request log stamps it at finish
            c.execute("UPDATE budget_spent SET spent = spent + ? WHERE key_id = ?",
                      (max(0, int(actual_pico)), reservation.key_id))

    def spent(self, key: KeyRecord) -> int:
        with self._ledger.transaction() as c:
            return self._account(c, key)[1]

    def held(self, key: KeyRecord) -> int:
        with self._ledger.transaction() as c:
            return self._account(c, key)[2]

    def forget(self, key_id: str) -> None:
        with self._ledger.transaction() as c:
            c.execute("DELETE FROM budget_spent WHERE key_id = ?", (key_id,))


class SharedLimits:
    """:class:`~tierline.keys.limits.Limits` (exact 60 s sliding windows) in a :class:`Ledger`.

    Times are ``time.monotonic()``, which is one clock for every process of the machine.
    """

    def __init__(self, ledger: Ledger, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ledger = ledger
        self._clock = clock

    def admit(self, key: KeyRecord, tokens: int) -> Admission | None:
        if key.rpm is None and key.tpm is None:
            return None
        tokens = max(0, int(tokens))
        with self._ledger.transaction() as c:
            now = self._clock()
            n, used = self._window(c, key.id, now)
            if key.rpm is not None and n >= key.rpm:
                # the oldest of the last `rpm` admissions must leave the window first
                (ts,) = c.execute("SELECT ts FROM limit_events WHERE key_id = ? ORDER BY ts "
                                  "DESC LIMIT 1 OFFSET ?", (key.id, key.rpm - 1)).fetchone()
                raise rpm_refusal(key, ts + WINDOW - now)
            if key.tpm is not None and tokens > key.tpm:
                raise tpm_too_big(key, tokens)
            if key.tpm is not None and used + tokens > key.tpm:
                raise tpm_refusal(key, self._tpm_wait(c, key, used + tokens - key.tpm, now))
            cur = c.execute("INSERT INTO limit_events (key_id, ts, tokens) VALUES (?, ?, ?)",
                            (key.id, now, tokens))
            c.execute("UPDATE limit_totals SET n = n + 1, tokens = tokens + ? WHERE key_id = ?",
                      (tokens, key.id))
            return Admission(key.id, now, tokens, cur.lastrowid or 0)

    def settle(self, a: Admission | None, used: int) -> None:
        """True the admission up to the tokens the request really used (if it is still in
        the window: an expired row is gone, with the tokens it had)."""
        if a is None or not a.row:
            return
        used = max(0, int(used))
        if used == a.tokens:
            return
        with self._ledger.transaction() as c:
            # the row's ts too: a rowid freed by an expired admission can be reused
            if c.execute("UPDATE limit_events SET tokens = ? WHERE rowid = ? AND key_id = ? "
                         "AND ts = ?", (used, a.row, a.key_id, a.ts)).rowcount:
                c.execute("UPDATE limit_totals SET tokens = tokens + ? WHERE key_id = ?",
                          (used - a.tokens, a.key_id))
                a.tokens = used

    @staticmethod
    def _window(c: sqlite3.Connection, key_id: str, now: float) -> tuple[int, int]:
        """(admissions, tokens) of the last 60 s: running totals, minus what just expired
        (each admission is added once and expired once: O(1) amortised)."""
        row = c.execute("SELECT n, tokens FROM limit_totals WHERE key_id = ?",
                        (key_id,)).fetchone()
        if row is None:
            c.execute("INSERT INTO limit_totals (key_id, n, tokens) VALUES (?, 0, 0)",
                      (key_id,))
            row = (0, 0)
        cut = now - WINDOW
        gone, gone_tokens = c.execute(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM limit_events "
            "WHERE key_id = ? AND ts <= ?", (key_id, cut)).fetchone()
        if gone:
            c.execute("DELETE FROM limit_events WHERE key_id = ? AND ts <= ?", (key_id, cut))
            c.execute("UPDATE limit_totals SET n = n - ?, tokens = tokens - ? WHERE key_id = ?",
                      (gone, gone_tokens, key_id))
        return int(row[0]) - int(gone), int(row[1]) - int(gone_tokens)

    @staticmethod
    def _tpm_wait(c: sqlite3.Connection, key: KeyRecord, excess: int, now: float) -> float:
        for ts, n in c.execute("SELECT ts, tokens FROM limit_events WHERE key_id = ? "
                               "ORDER BY ts", (key.id,)):
            excess -= int(n)
            if excess <= 0:
                return float(ts) + WINDOW - now
        return WINDOW

    def forget(self, key_id: str) -> None:
        with self._ledger.transaction() as c:
            c.execute("DELETE FROM limit_events WHERE key_id = ?", (key_id,))
            c.execute("DELETE FROM limit_totals WHERE key_id = ?", (key_id,))


__all__ = ["Ledger", "SharedBudgets", "SharedLimits", "ledger_path", "reset"]
