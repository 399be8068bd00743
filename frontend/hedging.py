"""Hedged requests (Dean and Barroso, "The Tail at Scale"): the latency record of recent data
requests, and the delay after which a still-outstanding query is re-sent to another replica.

The delay is fixed, or the given percentile of recent latencies (p95 by default: hedging only
the slowest ~5% caps the extra load near 5%). Before enough samples exist the fixed fallback holds.
"""
from __future__ import annotations

from collections import deque

import numpy as np

MIN_SAMPLES = 50
RECOMPUTE_EVERY = 64


class LatencyTracker:
    """The last ``size`` request latencies (seconds), with a cached percentile."""

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._since = 0
        self._cache: dict[float, float] = {}

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._since += 1
        if self._since >= RECOMPUTE_EVERY:  # percentiles are recomputed in batches, not per request
            self._since = 0
            self._cache.clear()

    def percentile(self, q: float) -> float:
        if q not in self._cache:
            self._cache[q] = float(np.percentile(np.fromiter(self._samples, float), q)) if self._samples else 0.0
        return self._cache[q]


class HedgePolicy:
    def __init__(self, tracker: LatencyTracker, delay_ms: float | None, percentile: float = 95.0,
                 fallback_ms: float = 10.0) -> None:
        self.tracker = tracker
        self.delay_ms = delay_ms          # None: adaptive (percentile of recent latencies)
        self.percentile = percentile
        self.fallback_ms = fallback_ms

    def delay_s(self) -> float:
        if self.delay_ms is not None:
            return self.delay_ms / 1000
        if len(self.tracker) < MIN_SAMPLES:
            return self.fallback_ms / 1000
        return self.tracker.percentile(self.percentile)
