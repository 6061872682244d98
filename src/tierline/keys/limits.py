"""Per-key requests-per-minute and tokens-per-minute limits: exact sliding windows.

Each key keeps a deque of (time, tokens) admissions from the last 60 seconds and their
running token sum; every admission is appended once and expired once, so checks are O(1)
amortised. Check-and-record is one synchronous step under a lock. Over a limit ->
RateLimited (429) with `retry-after` = seconds until enough of the window has expired.

TPM is checked against what a request may use (prompt + `max_tokens`, which is all that is
known before the call) and trued up to what it did use when it ends (`settle`), so a key
sending requests without `max_tokens` is charged its real output tokens too.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tierline.errors import RateLimited
from tierline.keys.store import KeyRecord

WINDOW = 60.0


@dataclass(slots=True)
class Admission:
    """One admitted request's entry in its key's window (`row`: its ledger row, if shared)."""

    key_id: str
    ts: float
    tokens: int
    row: int = 0


@dataclass(slots=True)
class _Window:
    events: deque[Admission] = field(default_factory=deque)
    tokens: int = 0

    def expire(self, now: float) -> None:
        ev = self.events
        while ev and ev[0].ts <= now - WINDOW:
            self.tokens -= ev.popleft().tokens


def _retry_after(seconds: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(seconds)))}


def rpm_refusal(key: KeyRecord, wait: float) -> RateLimited:
    return RateLimited(f"rate limit of {key.rpm} requests per minute reached for key {key.id}",
                       headers=_retry_after(wait))


def tpm_refusal(key: KeyRecord, wait: float) -> RateLimited:
    return RateLimited(f"rate limit of {key.tpm} tokens per minute reached for key {key.id}",
                       headers=_retry_after(wait))


def tpm_too_big(key: KeyRecord, tokens: int) -> RateLimited:
    return RateLimited(
        f"this request needs {tokens} tokens (prompt + max output), more than the limit of "
        f"{key.tpm} tokens per minute for key {key.id}; lower max_tokens",
        headers={"x-should-retry": "false"})


class Limits:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def admit(self, key: KeyRecord, tokens: int) -> Admission | None:
        """Count one request of `tokens` against the key's RPM / TPM, or raise 429."""
        if key.rpm is None and key.tpm is None:
            return None
        tokens = max(0, int(tokens))
        with self._lock:
            now = self._clock()
            w = self._windows.get(key.id)
            if w is None:
                w = self._windows[key.id] = _Window()
            w.expire(now)
            if key.rpm is not None and len(w.events) >= key.rpm:
                # the oldest of the last `rpm` admissions must leave the window first
                raise rpm_refusal(key, w.events[len(w.events) - key.rpm].ts + WINDOW - now)
            if key.tpm is not None:
                if tokens > key.tpm:
                    raise tpm_too_big(key, tokens)
                if w.tokens + tokens > key.tpm:
                    raise tpm_refusal(key, self._tpm_wait(w, tokens, key.tpm, now))
            a = Admission(key.id, now, tokens)
            w.events.append(a)
            w.tokens += tokens
            return a

    def settle(self, a: Admission | None, used: int) -> None:
        """True the admission up to the tokens the request really used."""
        if a is None:
            return
        with self._lock:
            w = self._windows.get(a.key_id)
            # an admission older than the window has left it (or will, with its tokens)
            if w is not None and a.ts > self._clock() - WINDOW:
                used = max(0, int(used))
                w.tokens += used - a.tokens
                a.tokens = used

    @staticmethod
    def _tpm_wait(w: _Window, tokens: int, tpm: int, now: float) -> float:
        """Seconds until enough old admissions expire for `tokens` more to fit."""
        excess = w.tokens + tokens - tpm
        for a in w.events:
            excess -= a.tokens
            if excess <= 0:
                return a.ts + WINDOW - now
        return WINDOW

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._windows.pop(key_id, None)
