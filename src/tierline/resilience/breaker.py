"""Per-deployment circuit breakers: after N failures within a window a deployment cools
down (routing filters it out), then one half-open probe decides whether it comes back.
A probe that ends without a verdict (the upstream rejected the request on its merits, the
client went away, the call was cancelled) gives the slot back - `release`, or at the latest
when its lease of one cool-down period runs out - so a deployment is never locked out.

Worker processes share their verdicts: `on_open` / `on_close` report a breaker that opens
or recovers (the gateway writes them to the shared ledger), and `trip` applies a cool-down
another process decided. Each process still probes on its own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Breaker:
    failures: deque[float] = field(default_factory=deque)
    open_until: float = 0.0
    probing: float = 0.0  # when the half-open probe in flight started (0: none)


class Breakers:
    def __init__(self, *, failures: int, window: float, cooldown: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.window, self.cooldown = failures, window, cooldown
        self.clock = clock
        self._by: dict[str, Breaker] = {}
        self.on_open: Callable[[str, float], None] | None = None  # (deployment, open until)
        self.on_close: Callable[[str], None] | None = None

    def _get(self, name: str) -> Breaker:
        b = self._by.get(name)
        if b is None:
            b = self._by[name] = Breaker()
        return b

    def state(self, name: str) -> str:
        b = self._by.get(name)
        if b is None or b.open_until == 0.0:
            return "closed"
        return "open" if self.clock() < b.open_until else "half_open"

    def unhealthy(self) -> frozenset[str]:
        """Deployments routing must skip now (open, or half-open with a probe in flight)."""
        now = self.clock()
        return frozenset(n for n, b in self._by.items()
                         if b.open_until and (now < b.open_until or self._probing(b, now)))

    def _probing(self, b: Breaker, now: float) -> bool:
        return b.probing != 0.0 and now - b.probing < self.cooldown

    def before_call(self, name: str) -> bool:
        """Called before every attempt; True when this call is the half-open probe."""
        b = self._by.get(name)
        if b is not None and b.open_until:
            now = self.clock()
            if now >= b.open_until and not self._probing(b, now):
                b.probing = now
                return True
        return False

    def release(self, name: str) -> None:
        """The call ended without saying anything about the deployment's health."""
        b = self._by.get(name)
        if b is not None:
            b.probing = 0.0

    def success(self, name: str) -> None:
        b = self._by.get(name)
        if b is not None:
            was_open = b.open_until != 0.0
            b.failures.clear()
            b.open_until = 0.0
            b.probing = 0.0
            if was_open and self.on_close is not None:
                self.on_close(name)

    def trip(self, name: str, until: float) -> None:
        """Cool `name` down until `until` (another process's verdict), unless already longer."""
        b = self._get(name)
        if until > self.clock() and until > b.open_until:
            b.open_until = until
            b.probing = 0.0
            b.failures.clear()

    def _open(self, b: Breaker, name: str, now: float) -> None:
        b.open_until = now + self.cooldown
        if self.on_open is not None:
            self.on_open(name, b.open_until)

    def failure(self, name: str) -> None:
        b = self._get(name)
        now = self.clock()
        if b.probing:  # the half-open probe failed: cool down again
            b.probing = 0.0
            self._open(b, name, now)
            return
        b.failures.append(now)
        while b.failures and b.failures[0] < now - self.window:
            b.failures.popleft()
        if len(b.failures) >= self.threshold:
            b.failures.clear()
            self._open(b, name, now)
