"""RPM / TPM sliding windows with an injected clock."""

from __future__ import annotations

import pytest

from tierline.errors import RateLimited
from tierline.keys.limits import Limits
from tierline.keys.store import KeyRecord


def test_rpm_with_retry_after() -> None:
    now = [0.0]
    lim = Limits(clock=lambda: now[0])
    key = KeyRecord(id="key_r", name="r", rpm=3)
    for t in (0.0, 10.0, 20.0):
        now[0] = t
        lim.admit(key, 0)
    now[0] = 30.0
    with pytest.raises(RateLimited) as ei:
        lim.admit(key, 0)
    assert ei.value.status == 429 and ei.value.headers["retry-after"] == "30"
    assert "3 requests per minute" in ei.value.message
    now[0] = 59.5
    with pytest.raises(RateLimited) as ei:
        lim.admit(key, 0)
    assert ei.value.headers["retry-after"] == "1"
    now[0] = 60.0  # the t=0 request leaves the window
    lim.admit(key, 0)
    with pytest.raises(RateLimited) as ei:
        lim.admit(key, 0)
    assert ei.value.headers["retry-after"] == "10"


def test_tpm_with_retry_after() -> None:
    now = [0.0]
    lim = Limits(clock=lambda: now[0])
    key = KeyRecord(id="key_t", name="t", tpm=100)
    lim.admit(key, 60)
    now[0] = 10.0
    lim.admit(key, 30)
    now[0] = 20.0
    with pytest.raises(RateLimited) as ei:
        lim.admit(key, 20)  # needs the 60 from t=0 to expire
    assert ei.value.headers["retry-after"] == "40"
    lim.admit(key, 10)  # fits exactly
    now[0] = 60.0
    lim.admit(key, 55)
    with pytest.raises(RateLimited) as ei:
        lim.admit(key, 101)
    assert ei.value.headers == {"x-should-retry": "false"}


def test_refused_request_consumes_nothing() -> None:
    now = [0.0]
    lim = Limits(clock=lambda: now[0])
    key = KeyRecord(id="key_b", name="b", rpm=2, tpm=100)
    lim.admit(key, 90)
    for _ in range(5):
        with pytest.raises(RateLimited):
            lim.admit(key, 20)  # over TPM: does not count as a request
    lim.admit(key, 10)
    with pytest.raises(RateLimited) as ei:
        lim.admit(key, 0)
    assert "requests per minute" in ei.value.message


def test_keys_are_independent_and_unlimited_keys_skip() -> None:
    lim = Limits(clock=lambda: 0.0)
    a = KeyRecord(id="a", name="a", rpm=1)
    b = KeyRecord(id="b", name="b", rpm=1)
    lim.admit(a, 0)
    lim.admit(b, 0)
    free = KeyRecord(id="f", name="f")
    for _ in range(1000):
        lim.admit(free, 10**6)
    lim.forget("a")
    lim.admit(a, 0)


def test_tpm_is_trued_up_to_the_tokens_really_used() -> None:
    """Admission can only count prompt + max_tokens; at the end the window holds what the
    request used - more (no max_tokens given) or less."""
    now = [0.0]
    lim = Limits(clock=lambda: now[0])
    key = KeyRecord(id="key_u", name="u", tpm=1000)
    a = lim.admit(key, 10)  # prompt only: no max_tokens
    lim.settle(a, 10 + 950)  # ...and the answer was long
    with pytest.raises(RateLimited):
        lim.admit(key, 50)
    b = lim.admit(key, 30)
    lim.settle(b, 5)  # used less than reserved: the rest is free again
    lim.admit(key, 35)
    now[0] = 59.0
    late = lim.admit(KeyRecord(id="key_v", name="v", tpm=100), 10)
    now[0] = 130.0  # settled after its admission left the window: changes nothing
    lim.settle(late, 1000)
    lim.admit(KeyRecord(id="key_v", name="v", tpm=100), 100)
    lim.settle(None, 10)
