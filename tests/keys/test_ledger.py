"""Budgets and limits shared by worker processes through one SQLite ledger file."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tierline.errors import PaymentRequired, RateLimited
from tierline.keys.ledger import Ledger, SharedBudgets, SharedLimits, reset
from tierline.keys.store import KeyRecord

USD = 10**12  # picodollars
KEY = KeyRecord(id="key_shared", name="s", budget_usd=0.01, period="total")


def _reserve_many(path: str, n: int, out: multiprocessing.Queue[int]) -> None:
    """A worker process: try `n` reservations of $0.001, settle none, report the admitted."""
    b = SharedBudgets(Ledger(Path(path)))
    ok = 0
    for _ in range(n):
        try:
            b.reserve(KEY, USD // 1000)
            ok += 1
        except PaymentRequired:
            pass
    out.put(ok)


def _open(path: str, barrier: Any, out: multiprocessing.Queue[str]) -> None:
    barrier.wait()
    try:
        Ledger(Path(path))
        out.put("ok")
    except Exception as exc:  # reported to the test
        out.put(repr(exc))


def _publish_and_wait(path: str, data: str, done: Any, stop: Any) -> None:
    """A worker process: publish its latency stats, stay alive until told to stop."""
    Ledger(Path(path)).publish_stats(data)
    done.set()
    stop.wait(60)


def test_latency_stats_round_trip_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    led = Ledger(path)
    led.publish_stats('{"mine": 1}')
    assert led.peer_stats() == []  # a worker reads the others', not its own
    ctx = multiprocessing.get_context("spawn")
    done, stop = ctx.Event(), ctx.Event()
    peer = ctx.Process(target=_publish_and_wait,
                       args=(str(path), '{"m": {"ttft_s": [0.1, 3.0]}}', done, stop))
    peer.start()
    try:
        assert done.wait(60)
        assert led.peer_stats() == ['{"m": {"ttft_s": [0.1, 3.0]}}']
        # a worker that stopped publishing (stuck, or its pid reused) is ignored, then dropped
        assert led.peer_stats(now=time.monotonic() + 11) == []
        assert led.peer_stats(now=time.monotonic() + 11, max_age=60) != []
    finally:
        stop.set()
        peer.join(timeout=60)
    assert led.peer_stats() == []  # a dead worker's stats are ignored
    led.publish_stats('{"mine": 2}', now=time.monotonic() + 11)
    with led.transaction() as c:
        assert c.execute("SELECT data FROM live_stats").fetchall() == [('{"mine": 2}',)]


def test_workers_opening_a_fresh_ledger_at_once(tmp_path: Path) -> None:
    """All workers start together: none may fail with 'database is locked' (it did: schema
    statements in autocommit mode do not wait on the busy timeout)."""
    ctx = multiprocessing.get_context("spawn")
    results: list[str] = []
    for r in range(5):
        barrier, q = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(tmp_path / f"l{r}.sqlite3"), barrier, q))
                 for _ in range(6)]
        for p in procs:
            p.start()
        results += [q.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
    assert results == ["ok"] * 30, results


def test_two_processes_never_overshoot(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_reserve_many, args=(str(path), 40, q)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(got) == 10  # $0.01 / $0.001, over three processes together


def test_threads_on_two_connections_admit_exactly_what_fits(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    a, b = SharedBudgets(Ledger(path)), SharedBudgets(Ledger(path))
    results: list[bool] = []
    lock = threading.Lock()

    def one(budgets: SharedBudgets) -> None:
        try:
            r = budgets.reserve(KEY, USD // 1000)
        except PaymentRequired as exc:
            assert "budget exceeded for key key_shared" in str(exc)
            with lock:
                results.append(False)
            return
        with lock:
            results.append(True)
        budgets.settle(r, USD // 1000)

    threads = [threading.Thread(target=one, args=(a if i % 2 else b,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 10
    assert a.spent(KEY) == b.spent(KEY) == USD // 100 and a.held(KEY) == 0


def test_settle_books_actual_cost_and_frees_room(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    a, b = SharedBudgets(Ledger(path)), SharedBudgets(Ledger(path))
    r = a.reserve(KEY, USD // 200)  # $0.005 held
    assert r is not None and b.held(KEY) == USD // 200
    a.settle(r, USD // 1000)
    a.settle(r, USD // 1000)  # idempotent
    assert b.spent(KEY) == USD // 1000 and b.held(KEY) == 0
    assert b.reserve(KEY, USD // 1000 * 9) is not None  # exactly the rest fits
    with pytest.raises(PaymentRequired):
        a.reserve(KEY, 1)
    assert a.reserve(KeyRecord(id="nobudget", name="n"), 10**15) is None


def test_spend_is_read_from_the_request_log_once_per_period(tmp_path: Path) -> None:
    calls: list[str] = []

    def source(key_id: str, since: float) -> int:
        calls.append(key_id)
        return USD // 100 - USD // 1000  # $0.009 already spent

    b = SharedBudgets(Ledger(tmp_path / "l.sqlite3"), source)
    assert b.reserve(KEY, USD // 1000) is not None
    with pytest.raises(PaymentRequired):
        b.reserve(KEY, 1)
    assert calls == ["key_shared"]


def test_holds_of_a_dead_worker_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    b = SharedBudgets(Ledger(path))
    assert b.reserve(KEY, USD // 100) is not None  # our own hold: the budget is full
    led = Ledger(path)
    with led.transaction() as c:  # a hold left by a worker that died mid-request
        c.execute("INSERT INTO budget_holds (key_id, amount, pid) VALUES (?, ?, ?)",
                  (KEY.id, USD, pid))
    assert b.held(KEY) == USD + USD // 100
    SharedBudgets(Ledger(path))  # the replacement worker opens the ledger
    assert b.held(KEY) == USD // 100  # ours (a live pid) stays


def test_reset_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    led = Ledger(path)
    assert SharedBudgets(led).reserve(KEY, USD // 100) is not None
    led.close()
    reset(path)
    assert not path.exists()
    assert SharedBudgets(Ledger(path)).held(KEY) == 0


def test_shared_limits_rpm_tpm_and_window(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    now = [1000.0]
    a = SharedLimits(Ledger(path), clock=lambda: now[0])
    b = SharedLimits(Ledger(path), clock=lambda: now[0])
    key = KeyRecord(id="k_rpm", name="r", rpm=5)
    for i in range(5):
        (a if i % 2 else b).admit(key, 10)
        now[0] += 1.0
    with pytest.raises(RateLimited) as ei:
        a.admit(key, 10)
    assert ei.value.headers["retry-after"] == "55"  # the first admission leaves at t=1060
    now[0] = 1060.5
    b.admit(key, 10)  # one slot free again
    tk = KeyRecord(id="k_tpm", name="t", tpm=100)
    a.admit(tk, 60)
    with pytest.raises(RateLimited, match="tokens per minute reached"):
        b.admit(tk, 50)
    with pytest.raises(RateLimited, match="lower max_tokens") as e2:
        b.admit(tk, 101)
    assert e2.value.headers == {"x-should-retry": "false"}
    b.admit(tk, 40)
    a.forget("k_tpm")
    b.admit(tk, 100)
    a.admit(KeyRecord(id="free", name="f"), 10**9)  # no limits: never touches the ledger


def test_shared_tpm_is_trued_up_across_workers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    now = [1000.0]
    a = SharedLimits(Ledger(path), clock=lambda: now[0])
    b = SharedLimits(Ledger(path), clock=lambda: now[0])
    key = KeyRecord(id="k_up", name="u", tpm=1000)
    adm = a.admit(key, 10)
    a.settle(adm, 960)  # one worker's long answer...
    with pytest.raises(RateLimited, match="tokens per minute reached"):
        b.admit(key, 50)  # ...counts in the other worker's window
    b.settle(b.admit(key, 40), 0)
    b.admit(key, 40)
    now[0] = 1061.0  # the row expired: settling it later changes nothing
    a.settle(adm, 5000)
    b.admit(key, 1000)


def test_settling_an_expired_admission_never_touches_a_reused_row(tmp_path: Path) -> None:
    """A request longer than the window: its row expired and SQLite may hand its rowid to
    the next admission; settling the old one must not rewrite the new one."""
    path = tmp_path / "ledger.sqlite3"
    now = [1000.0]
    lim = SharedLimits(Ledger(path), clock=lambda: now[0])
    key = KeyRecord(id="k_re", name="r", tpm=1000)
    old = lim.admit(key, 100)
    now[0] = 1061.0
    new = lim.admit(key, 300)  # prunes the old row; may get its rowid
    assert old is not None and new is not None
    lim.settle(old, 900)  # the long request ends
    lim.settle(new, 300)
    lim.admit(key, 700)  # 300 + 700 fit: the total was not corrupted
    now[0] = 1200.0
    lim.admit(key, 1000)  # everything expired: the whole limit is free
