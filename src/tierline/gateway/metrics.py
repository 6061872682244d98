"""Prometheus metrics without a global registry: one `Metrics` object per app.

Counters and histograms keyed by label tuples; `render()` emits the text exposition
format. Recording is a dict lookup and a few integer adds (hot path).

With several worker processes, each publishes `snapshot()` to the shared ledger every second
and `/metrics` renders `merged()` over all of them: counters and histograms summed (a dead
worker's last counts stay, so totals never go down), gauges from live workers only
(`in_flight` summed, `deployment_healthy` the minimum: unhealthy if any worker's circuit is
open).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[str, ...]


class Counter:
    def __init__(self, name: str, help_: str, labels: Labels) -> None:
        self.name, self.help, self.labels = name, help_, labels
        self.values: defaultdict[Labels, float] = defaultdict(float)

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] += amount

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for lv, v in sorted(self.values.items()):
            out.append(f"{self.name}{_fmt(self.labels, lv)} {_num(v)}")
        return out


class Gauge(Counter):
    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def render(self) -> list[str]:
        out = super().render()
        out[1] = f"# TYPE {self.name} gauge"
        return out


class Histogram:
    def __init__(self, name: str, help_: str, labels: Labels,
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.labels, self.buckets = name, help_, labels, buckets
        self.counts: dict[Labels, list[int]] = {}
        self.sums: defaultdict[Labels, float] = defaultdict(float)

    def observe(self, labels: Labels, value: float) -> None:
        c = self.counts.get(labels)
        if c is None:
            c = self.counts[labels] = [0] * (len(self.buckets) + 1)
        c[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] += value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for lv, counts in sorted(self.counts.items()):
            acc = 0
            for b, n in zip(self.buckets, counts, strict=False):
                acc += n
                out.append(f"{self.name}_bucket{_fmt(self.labels + ('le',), lv + (_num(b),))} "
                           f"{acc}")
            acc += counts[-1]
            out.append(f"{self.name}_bucket{_fmt(self.labels + ('le',), lv + ('+Inf',))} {acc}")
            out.append(f"{self.name}_sum{_fmt(self.labels, lv)} {_num(self.sums[lv])}")
            out.append(f"{self.name}_count{_fmt(self.labels, lv)} {acc}")
        return out


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(names: Labels, values: Labels) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_esc(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Metrics:
    """Everything /metrics exposes. Labels: model (deployment), provider."""

    def __init__(self) -> None:
        ml = ("model", "provider")
        self.requests = Counter("tierline_requests_total", "Requests by outcome.",
                                ml + ("status",))
        self.errors = Counter("tierline_errors_total", "Failed requests and upstream attempts.",
                              ml + ("type",))
        self.latency = Histogram("tierline_request_latency_seconds", "End-to-end latency.", ml)
        self.ttft = Histogram("tierline_ttft_seconds", "Time to first token (streams).", ml)
        self.tokens = Counter("tierline_tokens_total", "Tokens by kind.", ml + ("kind",))
        self.cost = Counter("tierline_cost_usd_total", "Spend in USD.", ml)
        self.health = Gauge("tierline_deployment_healthy",
                            "1 if the deployment is accepting traffic (circuit closed).",
                            ("model",))
        self.in_flight = Gauge("tierline_in_flight_requests", "Requests being served.", ())
        self._all: list[Counter | Histogram] = [self.requests, self.errors, self.latency,
                                                self.ttft, self.tokens, self.cost, self.health,
                                                self.in_flight]

    def render(self) -> str:
        lines: list[str] = []
        for m in self._all:
            lines.extend(m.render())
        return "\n".join(lines) + "\n"

    def snapshot(self) -> dict[str, Any]:
        """Every value, JSON-serialisable (label tuples become lists)."""
        out: dict[str, Any] = {}
        for m in self._all:
            if isinstance(m, Histogram):
                out[m.name] = [[list(k), c, m.sums[k]] for k, c in m.counts.items()]
            else:
                out[m.name] = [[list(k), v] for k, v in m.values.items()]
        return out

    @classmethod
    def merged(cls, snapshots: Iterable[tuple[dict[str, Any], bool]]) -> Metrics:
        """The metrics of several processes: ``(snapshot, alive)`` pairs."""
        total = cls()
        health: dict[tuple[str, ...], float] = {}
        for snap, alive in snapshots:
            for m in total._all:
                for row in snap.get(m.name, []):
                    k = tuple(row[0])
                    if isinstance(m, Histogram):
                        c = m.counts.setdefault(k, [0] * (len(m.buckets) + 1))
                        for i, n in enumerate(row[1]):
                            c[i] += int(n)
                        m.sums[k] += float(row[2])
                    elif m is total.health:
                        if alive:
                            health[k] = min(health.get(k, 1.0), float(row[1]))
                    elif isinstance(m, Gauge):
                        if alive:
                            m.inc(k, float(row[1]))
                    else:
                        m.inc(k, float(row[1]))
        for k, v in health.items():
            total.health.set(k, v)
        return total
