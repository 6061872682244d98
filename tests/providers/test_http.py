"""Upstream response helpers: retry-after parsing."""

from __future__ import annotations

import email.utils
import time

import pytest

from tierline.providers.http import MAX_RETRY_AFTER, parse_retry_after


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "2.5"}, 2.5),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ({"retry-after": "-4"}, 0.0),
    ({"retry-after": "inf"}, None),
    ({"retry-after": "1e999"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after-ms": "inf", "retry-after": "2"}, 2.0),
    ({"retry-after": "99999999"}, MAX_RETRY_AFTER),
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_retry_after_is_finite_and_bounded(headers: dict[str, str],
                                           expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    v = parse_retry_after({"retry-after": when})
    assert v is not None and 27 <= v <= 31
