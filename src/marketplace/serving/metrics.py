"""Counters and histograms in the Prometheus text format (no client library needed)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, total = [], 0
        sep = "," if labels else ""
        for bound, count in zip(self.buckets + (float("inf"),), self.counts):
            total += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {total}')
        braces = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{braces} {self.sum:.6f}", f"{name}_count{braces} {total}"]


class Metrics:
    """Requests by endpoint and status, their latency, and the micro-batches' sizes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batches = Histogram(BATCH_BUCKETS)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(endpoint, status)] += 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, size: int) -> None:
        with self.lock:
            self.batches.observe(size)

    def render(self, status: dict) -> str:
        """The exposition text: these counters plus the learner's (from `Engine.status`)."""
        lines = ["# HELP marketplace_requests_total HTTP requests by endpoint and status.",
                 "# TYPE marketplace_requests_total counter"]
        with self.lock:
            for (endpoint, code), n in sorted(self.requests.items()):
                lines.append(f'marketplace_requests_total{{endpoint="{endpoint}",status="{code}"}} {n}')
            lines += ["# HELP marketplace_request_seconds Time from request to answer.",
                      "# TYPE marketplace_request_seconds histogram"]
            for endpoint, hist in sorted(self.latency.items()):
                lines += hist.lines("marketplace_request_seconds", f'endpoint="{endpoint}"')
            lines += ["# HELP marketplace_batch_size Inputs per batched forward (micro-batches).",
                      "# TYPE marketplace_batch_size histogram", *self.batches.lines("marketplace_batch_size")]
        for key, kind, help_ in (("served", "counter", "Inputs served along random paths."),
                                 ("recorded", "counter", "Records learned from."),
                                 ("stale", "counter", "Records of superseded steps, not learned from."),
                                 ("updates", "counter", "V2 updates made from records."),
                                 ("step", "gauge", "The current step (seeds) of the market."),
                                 ("records_waiting", "gauge", "Records waiting for the next update."),
                                 ("uptime_s", "gauge", "Seconds since the server started.")):
            name = f"marketplace_{key}" + ("_total" if kind == "counter" else "")
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {status.get(key, 0)}"]
        return "\n".join(lines) + "\n"
