"""A `python` check used by the workload tests."""

from __future__ import annotations

from typing import Any


def is_shouting(answer: str, item: Any) -> bool:
    return answer.isupper() and bool(item.id)
