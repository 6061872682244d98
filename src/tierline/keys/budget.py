"""Per-key spend budgets that hold under concurrency.

Before a call, the gateway reserves its worst-case cost; the reservation is refused (402)
when spent + in flight + worst > budget. After the call, `settle` releases the reservation
and adds the actual cost. Check-and-reserve is one synchronous step under a lock, so
concurrent requests on one event loop (or several threads) can never jointly overshoot:
the spend can exceed the budget only if a provider charges more than the worst case.

Spend per key and period (UTC day, UTC month, or all time) is read once from the request
log when a key is first touched in a period, then tracked in memory. Costs are integer
picodollars throughout.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tierline.accounting.log import sqlite_ro_uri
from tierline.accounting.pricing import PICO_PER_USD, usd
from tierline.errors import PaymentRequired
from tierline.keys.store import KeyRecord, Period

SpendSource = Callable[[str, float], int]  # (key id, period start ts) -> picodollars spent


def period_start(period: Period, now: float) -> float:
    """The start (unix seconds, UTC) of the period containing `now`."""
    if period == "total":
        return 0.0
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


def budget_pico(key: KeyRecord) -> int | None:
    if key.budget_usd is None:
        return None
    return round(key.budget_usd * PICO_PER_USD)


def request_log_spend(path: Path) -> SpendSource:
    """A spend source reading the request log (`requests.key_id, ts, cost_pico`)."""
    def read(key_id: str, since: float) -> int:
        if not path.exists():
            return 0
        try:
            conn = sqlite3.connect(sqlite_ro_uri(path), uri=True, timeout=5.0)
        except sqlite3.Error:
            return 0
        try:
            row = conn.execute("SELECT COALESCE(SUM(cost_pico), 0) FROM requests "
                               "WHERE key_id = ? AND ts >= ?", (key_id, since)).fetchone()
        except sqlite3.OperationalError:  # no requests table yet
            return 0
        finally:
            conn.close()
        return int(row[0])
    return read


@dataclass(slots=True)
class Reservation:
    key_id: str
    start: float  # period start it was taken in
    amount: int  # picodollars held
    settled: bool = False
    hold_id: int = 0  # its row in a shared ledger (SharedBudgets)


@dataclass(slots=True)
class _Account:
    start: float
    spent: int = 0
    held: int = 0


class Budgets:
    """In-memory budget accounts, one per key and current period."""

    def __init__(self, spend_source: SpendSource | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._source = spend_source
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}

    def _account(self, key: KeyRecord) -> _Account:
        """The key's account for the current period (rolled over / loaded on demand)."""
        start = period_start(key.period, self._clock())
        acc = self._accounts.get(key.id)
        if acc is None or acc.start != start:
            spent = self._source(key.id, start) if self._source is not None else 0
            held = 0
            if acc is not None and acc.start < start:
                held = acc.held  # requests still in flight from the last period
            acc = _Account(start=start, spent=spent, held=held)
            self._accounts[key.id] = acc
        return acc

    def reserve(self, key: KeyRecord, worst_pico: int) -> Reservation | None:
        """Hold `worst_pico` against the key's budget, or raise PaymentRequired (402).
        None when the key has no budget."""
        budget = budget_pico(key)
        if budget is None:
            return None
        worst = max(0, int(worst_pico))
        with self._lock:
            acc = self._account(key)
            if acc.spent + acc.held + worst > budget:
                raise refusal(key, budget, acc.spent, acc.held, worst)
            acc.held += worst
            return Reservation(key_id=key.id, start=acc.start, amount=worst)

    def settle(self, reservation: Reservation | None, actual_pico: int) -> None:
        """Release the reservation and book the actual cost (idempotent)."""
        if reservation is None or reservation.settled:
            return
        with self._lock:
            reservation.settled = True
            acc = self._accounts.get(reservation.key_id)
            if acc is None:
                return
            acc.held = max(0, acc.held - reservation.amount)
            # the request log stamps the row at finish time: book it in the current period
            acc.spent += max(0, int(actual_pico))

    def spent(self, key: KeyRecord) -> int:
        """Picodollars spent by `key` in its current period (settled requests)."""
        with self._lock:
            return self._account(key).spent

    def held(self, key: KeyRecord) -> int:
        with self._lock:
            return self._account(key).held

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._accounts.pop(key_id, None)



def refusal(key: KeyRecord, budget: int, spent: int, held: int, worst: int) -> PaymentRequired:
    """The 402 for a reservation of `worst` that does not fit the key's budget."""
    when = "in total" if key.period == "total" else f"this {key.period} (UTC)"
    msg = f"budget exceeded for key {key.id}: ${usd(spent)} of ${usd(budget)} spent {when}"
    if held:
        msg += f", ${usd(held)} reserved by requests in flight"
    msg += (f"; this request may cost up to ${usd(worst)} (a lower max_tokens lowers "
            "that bound)")
    return PaymentRequired(msg, headers={"x-should-retry": "false"})
