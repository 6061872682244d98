"""Live per-deployment latency statistics (EWMA), fed by the gateway after each call and
read by the `fastest` strategy. One object per app; no global state.

With several worker processes (``tierline serve --workers N``) each worker publishes its own
EWMAs and observation counts to the ledger once a second and hands the other live workers'
to :meth:`LiveStats.set_peers`. The readers (:meth:`LiveStats.ttft`, ...) then return the
mean of the worker's own EWMA and the peers', weighted by their observation counts, each
count capped at :data:`PEER_CAP` so that the result still follows recent latency; a
deployment that only a peer has measured counts as measured. Without peers (one process)
the readers return the worker's own EWMA, exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PEER_CAP = 20  # observations at most per worker in the shared mean (EWMA alpha 0.2 ~ 5)
FIELDS = ("ttft_s", "latency_s", "tokens_per_s")

# published by one worker: {deployment: {field: [ewma, observations]}}
Published = dict[str, dict[str, list[float]]]


@dataclass(slots=True)
class Ewma:
    value: float | None = None
    alpha: float = 0.2
    n: int = 0  # observations

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        self.n += 1


@dataclass(slots=True)
class DeploymentStats:
    ttft_s: Ewma
    latency_s: Ewma
    tokens_per_s: Ewma


# the peers of one deployment, per field: (sum of weight * ewma, sum of weights)
_PeerSums = list[tuple[float, float]]


class LiveStats:
    def __init__(self, *, cap: int = PEER_CAP) -> None:
        self._by: dict[str, DeploymentStats] = {}
        self._peers: dict[str, _PeerSums] = {}
        self.cap = cap

    def get(self, name: str) -> DeploymentStats:
        """This process's own statistics of `name`."""
        s = self._by.get(name)
        if s is None:
            s = self._by[name] = DeploymentStats(Ewma(), Ewma(), Ewma())
        return s

    def observe(self, name: str, *, latency_s: float, ttft_s: float | None,
                output_tokens: int) -> None:
        s = self.get(name)
        s.latency_s.add(latency_s)
        s.ttft_s.add(ttft_s if ttft_s is not None else latency_s)
        gen = latency_s - (ttft_s or 0.0)
        if output_tokens > 1 and gen > 0:
            s.tokens_per_s.add(output_tokens / gen)

    def observe_failure(self, name: str, *, penalty_s: float) -> None:
        """A failed attempt (timeout, 5xx, refused): it counts as a first token that came
        only at ``penalty_s`` (the deployment's first-token timeout), so `fastest` ranks a
        failing deployment behind the ones that answer instead of exploring it forever."""
        s = self.get(name)
        s.latency_s.add(penalty_s)
        s.ttft_s.add(penalty_s)

    # -- readers: own EWMA, combined with the peers' when there are any ---------------------
    def ttft(self, name: str) -> float | None:
        s = self._by.get(name)
        if not self._peers:  # one process: the hot path stays a lookup
            return s.ttft_s.value if s else None
        return self._combined(name, 0, s.ttft_s if s else None)

    def latency(self, name: str) -> float | None:
        s = self._by.get(name)
        return self._combined(name, 1, s.latency_s if s else None)

    def tokens_per_s(self, name: str) -> float | None:
        s = self._by.get(name)
        return self._combined(name, 2, s.tokens_per_s if s else None)

    def _combined(self, name: str, i: int, own: Ewma | None) -> float | None:
        v = own.value if own is not None else None
        sums = self._peers.get(name)
        if sums is None:
            return v
        wv, w = sums[i]
        if v is not None and own is not None:
            k = min(max(own.n, 1), self.cap)
            wv, w = wv + k * v, w + k
        return wv / w if w > 0 else v

    # -- sharing between worker processes --------------------------------------------------
    def snapshot(self) -> Published:
        """This process's own EWMAs and observation counts (what it publishes)."""
        out: Published = {}
        for name, s in self._by.items():
            ewmas = (s.ttft_s, s.latency_s, s.tokens_per_s)
            fields = {f: [e.value, float(e.n)] for f, e in zip(FIELDS, ewmas, strict=True)
                      if e.value is not None and e.n > 0}
            if fields:
                out[name] = fields
        return out

    def set_peers(self, peers: Iterable[Any]) -> None:
        """Replace the peer values by these snapshots (one per other live worker, as
        :meth:`snapshot` makes them, decoded from JSON); malformed entries are skipped."""
        acc: dict[str, list[list[float]]] = {}
        for snap in peers:
            if not isinstance(snap, dict):
                continue
            for name, fields in snap.items():
                if not isinstance(name, str) or not isinstance(fields, dict):
                    continue
                for i, f in enumerate(FIELDS):
                    pair = fields.get(f)
                    if not (isinstance(pair, list) and len(pair) == 2):
                        continue
                    value, n = pair
                    if not (isinstance(value, (int, float)) and isinstance(n, (int, float))
                            and math.isfinite(value) and n >= 1):
                        continue
                    k = min(float(n), float(self.cap))
                    sums = acc.setdefault(name, [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
                    sums[i][0] += k * float(value)
                    sums[i][1] += k
        self._peers = {name: [(s[0], s[1]) for s in sums] for name, sums in acc.items()}
