"""Per-client request rates: one token bucket per client name, refilled continuously.

A bucket holds at most `burst` requests and refills at `rate` per second; a
request takes one, and with none left it is refused (429) with the seconds
until one is back, for `Retry-After`. The buckets are keyed by client name
(the tokens file bounds how many there are); requests without a valid token
share one bucket, `ANONYMOUS`, so no one can mint fresh buckets by
inventing tokens or addresses. Counts live in memory: a restart refills
every bucket.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

from ..errors import RateLimited

ANONYMOUS = "(anonymous)"  # the one bucket of requests without a valid token


class RateLimiter:
    """Token buckets of `burst` requests refilled at `rate` per second, one per key.

    rate: requests per second per key; 0 turns the limiter off. burst: the
    requests a key may send at once after a pause (default: one second's
    worth, at least 1). clock: seconds, monotonic (injected by tests).
    """

    def __init__(self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic):
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        burst = max(1, math.ceil(rate)) if burst is None else burst
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when they were counted)
        self._lock = threading.Lock()

    def wait(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` from `key`'s bucket and return 0, or take nothing and return the seconds until it could."""
        if self.rate == 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / self.rate

    def take(self, key: str) -> None:
        """One request for `key`, or a `RateLimited` 429 naming the wait."""
        wait = self.wait(key)
        if wait > 0:
            who = "anonymous requests" if key == ANONYMOUS else f"client {key!r}"
            raise RateLimited(f"{who} may send {self.rate:g} requests per second (bursts of {self.burst}); "
                              f"retry in {wait:.2f} s", max(1, math.ceil(wait)))
