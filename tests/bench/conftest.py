"""Fixtures: a workload writer and a running BenchMock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bench.mock_upstream import BenchMock

LATENCY = 0.1  # before the response headers
DELAY = 0.02  # before each content chunk and the finish chunk
CHUNKS = 3

ANSWERS: dict[str, dict[str, Any]] = {
    "capital of France": {"text": "The capital is Paris."},
    "zip code": {"text": "Code: 75001"},
    "say yes": {"text": "yes"},
    "6 times 7": {"text": "6 times 7 is 42."},
    "2 plus 2": {"text": "It is 5"},
    "Which letter": {"text": "The answer is (B)."},
    "json person": {"text": '{"name": "Ann", "age": 3}'},
    "json broken": {"text": '{"name": 3}'},
    "shout": {"text": "HELLO"},
    "boom": {"status": 500, "error_message": "upstream exploded"},
    "slow": {"latency": 2.0},
    "midway": {"stream_error": "error_object"},
    "cut": {"truncate": True},
}


@pytest.fixture
async def mock() -> AsyncIterator[BenchMock]:
    m = BenchMock(ANSWERS, latency=LATENCY, delay=DELAY, chunks=CHUNKS)
    await m.start()
    yield m
    await m.stop()


@pytest.fixture
def write_workload(tmp_path: Path) -> Callable[[list[dict[str, Any]]], Path]:
    def write(lines: list[dict[str, Any]]) -> Path:
        p = tmp_path / "workload.jsonl"
        p.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        return p
    return write


def item(i: str, prompt: str, checks: list[dict[str, Any]] | None = None,
         **extra: Any) -> dict[str, Any]:
    return {"id": i, "request": {"messages": [{"role": "user", "content": prompt}],
                                 "max_tokens": 16}, "checks": checks or [], **extra}
