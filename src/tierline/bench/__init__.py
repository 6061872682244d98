"""`tierline bench`: replay a workload against targets and measure latency, validated
quality and cost per useful response.

Modules: `workload` (JSONL items, sampling), `checks` (answer validation, LLM judge),
`targets` (target specs, pricing), `client` (one streamed request, timed), `runner`
(load modes, progress), `stats` (percentiles, bootstrap CIs, per-target summary),
`report` (Markdown / self-contained HTML / plots), `export` (routing outcomes,
request-log import), `cli` (the `tierline bench` commands).
"""

from __future__ import annotations

__all__ = ["run_bench"]


def __getattr__(name: str) -> object:  # lazy: nothing heavy at import time
    if name == "run_bench":
        from tierline.bench.runner import run_bench
        return run_bench
    raise AttributeError(name)
