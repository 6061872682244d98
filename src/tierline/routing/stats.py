"""Live per-deployment latency statistics (EWMA), fed by the gateway after each call and
read by the `fastest` strategy. One object per app; no global state.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Ewma:
    value: float | None = None
    alpha: float = 0.2

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)


@dataclass(slots=True)
class DeploymentStats:
    ttft_s: Ewma
    latency_s: Ewma
    tokens_per_s: Ewma


class LiveStats:
    def __init__(self) -> None:
        self._by: dict[str, DeploymentStats] = {}

    def get(self, name: str) -> DeploymentStats:
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

    def ttft(self, name: str) -> float | None:
        s = self._by.get(name)
        return s.ttft_s.value if s else None
