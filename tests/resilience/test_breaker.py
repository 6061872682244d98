"""Circuit breakers, and their verdicts shared between worker processes through the ledger."""

from __future__ import annotations

from pathlib import Path

from tierline.keys.ledger import Ledger
from tierline.resilience.breaker import Breakers


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _pull(ledger: Ledger, b: Breakers) -> None:
    """What each worker's gateway does every second."""
    for name, until in ledger.breaker_opens(b.clock()):
        b.trip(name, until)


def _worker(tmp_path: Path, clock: Clock, failures: int, cooldown: float
            ) -> tuple[Ledger, Breakers]:
    """One process's breakers, wired to its own connection of the shared ledger."""
    led = Ledger(tmp_path / "l.sqlite3")
    b = Breakers(failures=failures, window=10, cooldown=cooldown, clock=clock)
    b.on_open, b.on_close = led.breaker_opened, led.breaker_closed
    return led, b


def test_open_in_one_process_applies_in_the_other(tmp_path: Path) -> None:
    clock = Clock()
    (la, a), (lb, b) = (_worker(tmp_path, clock, 2, 30) for _ in range(2))
    a.failure("d")
    _pull(lb, b)
    assert b.state("d") == "closed"  # one failure: nothing to share yet
    a.failure("d")
    assert a.state("d") == "open" and b.state("d") == "closed"
    _pull(lb, b)
    assert b.state("d") == "open" and b.unhealthy() == {"d"}
    _pull(la, a)  # its own verdict changes nothing
    clock.t += 31  # cool-down over: each process probes on its own
    assert a.state("d") == b.state("d") == "half_open"
    a.before_call("d")
    a.success("d")  # a's probe succeeded: the shared verdict is withdrawn
    assert a.state("d") == "closed" and lb.breaker_opens(clock()) == []
    _pull(la, a)
    assert a.state("d") == "closed"


def test_failed_probe_cools_down_again_everywhere(tmp_path: Path) -> None:
    clock = Clock()
    (_, a), (lb, b) = (_worker(tmp_path, clock, 1, 5) for _ in range(2))
    a.failure("d")
    clock.t += 6
    a.before_call("d")
    a.failure("d")  # the probe failed: open until t + 5 again
    _pull(lb, b)
    assert b.state("d") == "open"
    clock.t += 6
    _pull(lb, b)  # expired verdicts are not applied
    assert b.state("d") == "half_open"


def test_trip_never_shortens_a_cool_down() -> None:
    clock = Clock()
    b = Breakers(failures=1, window=10, cooldown=30, clock=clock)
    b.failure("d")  # open until 130
    b.trip("d", 110.0)
    clock.t = 120
    assert b.state("d") == "open"
    b.trip("x", 90.0)  # already over
    assert b.state("x") == "closed"


def test_probe_without_verdict_gives_the_slot_back() -> None:
    """A half-open probe that ends with neither success nor failure (the upstream rejected
    the request on its merits, the client left) must not lock the deployment out."""
    clock = Clock()
    b = Breakers(failures=1, window=10, cooldown=5, clock=clock)
    b.failure("d")
    clock.t += 5
    assert "d" not in b.unhealthy()
    b.before_call("d")  # the probe goes out
    assert "d" in b.unhealthy()
    b.release("d")  # ...and ends without a verdict
    assert "d" not in b.unhealthy()
    b.before_call("d")  # a lost probe (no release at all) expires after one cool-down
    clock.t += 4.9
    assert "d" in b.unhealthy()
    clock.t += 0.2
    assert "d" not in b.unhealthy()
    b.before_call("d")
    b.success("d")
    assert b.state("d") == "closed"


def test_only_the_probe_itself_is_the_probe() -> None:
    """`before_call` says which call is the half-open probe, so another call's 4xx (no
    verdict) cannot free the probe's slot (the executor releases only its own)."""
    clock = Clock()
    b = Breakers(failures=1, window=10, cooldown=5, clock=clock)
    assert b.before_call("d") is False  # closed: no probe
    b.failure("d")
    clock.t += 5
    assert b.before_call("d") is True  # this one probes
    assert b.before_call("d") is False  # a call already under way is not the probe
    assert "d" in b.unhealthy()
