"""Tests of marketplace.serving.limits: token buckets per key on an injected clock."""

import pytest

from marketplace.errors import RateLimited
from marketplace.serving.limits import ANONYMOUS, RateLimiter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("a") == pytest.approx(0.5)  # empty: one request back in 1 / rate seconds
    assert limiter.wait("b") == 0.0  # every key its own bucket
    clock.now = 0.5
    assert limiter.wait("a") == 0.0 and limiter.wait("a") == pytest.approx(0.5)
    clock.now = 100.0  # a long pause refills to the burst, no further
    assert [limiter.wait("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_refusals_are_429_with_a_whole_number_of_seconds_and_rate_zero_is_off():
    limiter = RateLimiter(rate=0.1, burst=1, clock=Clock())
    limiter.take(ANONYMOUS)
    with pytest.raises(RateLimited) as refused:
        limiter.take(ANONYMOUS)
    assert refused.value.status == 429 and refused.value.retry_after == 10 and "anonymous" in str(refused.value)
    off = RateLimiter(rate=0.0)
    assert all(off.wait("a") == 0.0 for _ in range(1000))
    assert RateLimiter(rate=2.5).burst == 3  # the default burst: one second's worth
    for rate, burst in ((-1.0, None), (float("nan"), None), (1.0, 0)):
        with pytest.raises(ValueError):
            RateLimiter(rate, burst)
