"""Budgets: reservations that hold under a real asyncio race, 402s, period rollover."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tierline.accounting.log import SCHEMA
from tierline.errors import PaymentRequired
from tierline.keys.budget import Budgets, period_start, request_log_spend
from tierline.keys.store import KeyRecord

USD = 10**12


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()


class Checked(Budgets):
    """Asserts the invariant spent + held <= budget after every reservation."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.admitted = 0

    def reserve(self, key: KeyRecord, worst_pico: int):  # type: ignore[no-untyped-def]
        try:
            r = super().reserve(key, worst_pico)
        except PaymentRequired:
            # refused only when the worst case really does not fit
            assert self.spent(key) + self.held(key) + worst_pico > self.limit
            raise
        self.admitted += 1
        assert self.spent(key) + self.held(key) <= self.limit
        return r


async def _race(b: Budgets, key: KeyRecord, n: int, worst: int, rng: random.Random,
                exact: bool) -> tuple[int, int]:
    refused = 0

    async def one() -> None:
        nonlocal refused
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        try:
            r = b.reserve(key, worst)
        except PaymentRequired:
            refused += 1
            return
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        b.settle(r, worst if exact else rng.randint(0, worst))

    await asyncio.gather(*(one() for _ in range(n)))
    return n - refused, refused


async def test_race_exact_costs_admits_exactly_what_fits() -> None:
    key = KeyRecord(id="key_race", name="r", budget_usd=0.01, period="total")
    worst = USD // 1000  # $0.001 -> exactly 10 fit in $0.01
    b = Checked(USD // 100)
    admitted, refused = await _race(b, key, 300, worst, random.Random(1), exact=True)
    assert admitted == 10 and refused == 290
    assert b.spent(key) == 10 * worst and b.held(key) == 0


async def test_race_random_costs_never_overshoots() -> None:
    key = KeyRecord(id="key_race2", name="r", budget_usd=0.01, period="total")
    worst = USD // 1000
    for seed in range(5):
        b = Checked(USD // 100)
        admitted, _ = await _race(b, key, 400, worst, random.Random(seed), exact=False)
        assert b.spent(key) <= USD // 100
        assert b.held(key) == 0
        # at least what fits at the worst case; more as cheaper answers free room
        assert admitted >= 10 and admitted == b.admitted


async def test_all_reserve_before_any_settle() -> None:
    key = KeyRecord(id="key_gate", name="g", budget_usd=0.0105, period="total")
    b = Budgets()
    gate = asyncio.Event()
    worst = USD // 1000
    out: list[bool] = []

    async def one() -> None:
        try:
            r = b.reserve(key, worst)
        except PaymentRequired:
            out.append(False)
            return
        out.append(True)
        await gate.wait()
        b.settle(r, worst // 2)

    tasks = [asyncio.create_task(one()) for _ in range(300)]
    while len(out) < 300:
        await asyncio.sleep(0)
    assert out.count(True) == 10
    gate.set()
    await asyncio.gather(*tasks)
    assert b.spent(key) == 10 * (worst // 2) and b.held(key) == 0
    # half the budget is left: ten more worst cases fit (5.25 USD-milli left -> 5)
    assert sum(1 for _ in range(20) if _try(b, key, worst)) == 5


def _try(b: Budgets, key: KeyRecord, worst: int) -> bool:
    try:
        b.reserve(key, worst)
    except PaymentRequired:
        return False
    return True


def test_refusal_message_and_headers() -> None:
    key = KeyRecord(id="key_msg", name="m", budget_usd=1.0, period="month")
    b = Budgets(clock=lambda: ts(2025, 3, 10))
    r = b.reserve(key, USD // 2)
    b.settle(r, USD // 4)
    b.reserve(key, USD // 2)
    with pytest.raises(PaymentRequired) as ei:
        b.reserve(key, USD // 2)
    e = ei.value
    assert e.status == 402 and e.headers["x-should-retry"] == "false"
    assert "budget exceeded for key key_msg" in e.message
    assert "$0.25 of $1 spent this month" in e.message and "$0.5 reserved" in e.message


def test_no_budget_no_reservation() -> None:
    b = Budgets()
    assert b.reserve(KeyRecord(id="k", name="k"), 10**15) is None
    b.settle(None, 5)


def test_settle_is_idempotent() -> None:
    key = KeyRecord(id="key_i", name="i", budget_usd=1.0, period="total")
    b = Budgets()
    r = b.reserve(key, 100)
    b.settle(r, 40)
    b.settle(r, 40)
    assert b.spent(key) == 40 and b.held(key) == 0


def test_period_start() -> None:
    t = ts(2025, 3, 10, 17, 5)
    assert period_start("day", t) == ts(2025, 3, 10)
    assert period_start("month", t) == ts(2025, 3, 1)
    assert period_start("total", t) == 0.0


def test_day_and_month_rollover_with_injected_clock() -> None:
    now = [ts(2025, 1, 31, 23, 59)]
    b = Budgets(clock=lambda: now[0])
    day = KeyRecord(id="key_d", name="d", budget_usd=1.0, period="day")
    month = KeyRecord(id="key_m", name="m", budget_usd=1.0, period="month")
    total = KeyRecord(id="key_t", name="t", budget_usd=1.0, period="total")
    for k in (day, month, total):
        b.settle(b.reserve(k, USD), USD)
        with pytest.raises(PaymentRequired):
            b.reserve(k, 1)
    now[0] = ts(2025, 2, 1, 0, 1)  # next UTC day and month
    assert b.reserve(day, USD) is not None
    assert b.reserve(month, USD) is not None
    with pytest.raises(PaymentRequired):
        b.reserve(total, 1)
    now[0] = ts(2025, 2, 2, 0, 0)
    assert b.spent(day) == 0 and b.spent(month) == 0  # the Feb 1 reservation is unsettled
    with pytest.raises(PaymentRequired):
        b.reserve(month, 1)


def test_in_flight_reservation_carries_over_rollover() -> None:
    now = [ts(2025, 5, 1, 23, 59, 59)]
    b = Budgets(clock=lambda: now[0])
    key = KeyRecord(id="key_c", name="c", budget_usd=1.0, period="day")
    r = b.reserve(key, USD)
    now[0] = ts(2025, 5, 2, 0, 0, 1)
    with pytest.raises(PaymentRequired):  # still held by the request in flight
        b.reserve(key, 1)
    b.settle(r, USD // 10)  # finishes today: booked today, like its request-log row
    assert b.spent(key) == USD // 10 and b.held(key) == 0
    assert b.reserve(key, USD - USD // 10) is not None


def test_spend_loaded_from_the_request_log(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    rows = [("r1", ts(2025, 6, 9, 12), "key_l", USD // 2),  # yesterday
            ("r2", ts(2025, 6, 10, 1), "key_l", USD // 4),
            ("r3", ts(2025, 6, 10, 2), "key_l", USD // 8),
            ("r4", ts(2025, 6, 10, 3), "key_other", USD)]
    conn.executemany("INSERT INTO requests (id, ts, key_id, cost_pico, status) "
                     "VALUES (?, ?, ?, ?, 200)", rows)
    conn.commit()
    conn.close()
    b = Budgets(request_log_spend(path), clock=lambda: ts(2025, 6, 10, 12))
    day = KeyRecord(id="key_l", name="l", budget_usd=1.0, period="day")
    assert b.spent(day) == USD // 4 + USD // 8
    month = KeyRecord(id="key_l", name="l", budget_usd=1.0, period="month")
    assert Budgets(request_log_spend(path), clock=lambda: ts(2025, 6, 10, 12)).spent(
        month) == USD // 2 + USD // 4 + USD // 8
    assert request_log_spend(tmp_path / "missing.sqlite3")("key_l", 0) == 0


@pytest.mark.parametrize("name", ["x#y", "a?b", "p%41q"])
def test_spend_is_re_read_from_a_log_whose_path_has_uri_characters(tmp_path: Path,
                                                                   name: str) -> None:
    """Else a key's budget starts from $0 again on every restart."""
    from tierline.accounting.log import LogRecord, RequestLog

    path = tmp_path / name / "requests.sqlite3"
    log = RequestLog(path)
    log.write(LogRecord(id="r1", ts=ts(2025, 6, 10), status=200, key_id="key_u",
                        cost_pico=USD // 4))
    log.close()
    key = KeyRecord(id="key_u", name="u", budget_usd=1.0, period="total")
    assert Budgets(request_log_spend(path)).spent(key) == USD // 4
    assert [p.name for p in tmp_path.iterdir()] == [name]
