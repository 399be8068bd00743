"""Latency percentiles that count abandoned requests: a request the frontend stopped waiting for
(its query was decoded or answered by a copy) says only that its worker took longer than it was
waited for. Dropping it biases the record low (the slow tail is what gets abandoned), and a decode
policy fed that record decodes ever sooner; so the percentile is the Kaplan-Meier estimate over
answered (event) and abandoned (right-censored) samples. Used by frontend.decode_policy.
"""
from __future__ import annotations

from collections import deque

import numpy as np

RECOMPUTE_EVERY = 64  # percentiles are recomputed in batches of samples, not per request
FILLING = 20          # up to this many samples, a record is "filling" (frontend.decode_policy.MIN_SAMPLES)


class SurvivalTracker:
    """The last ``size`` samples (seconds, censored or not), with cached percentiles."""

    def __init__(self, size: int = 2048) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._censored: deque[bool] = deque(maxlen=size)
        self._since = 0
        self._cache: dict[float, float] = {}
        self.filling = True  # still within its first FILLING samples: every sample may move a percentile

    def __len__(self) -> int:
        return len(self._values)

    def record(self, seconds: float, censored: bool = False) -> bool:
        """Add a sample; True when this dropped the cached percentiles (they may now change)."""
        self._values.append(seconds)
        self._censored.append(censored)
        if self.filling and len(self._values) > FILLING:
            self.filling = False
        self._since += 1
        if self._since >= RECOMPUTE_EVERY:
            self._since = 0
            self._cache.clear()
            return True
        return False

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100). When the censored samples leave the estimate short of q (too many
        requests abandoned to tell), the largest sample: a lower bound, which the next samples raise."""
        if q not in self._cache:
            self._cache[q] = kaplan_meier_quantile(np.fromiter(self._values, float),
                                                   np.fromiter(self._censored, bool), q / 100)
        return self._cache[q]


def kaplan_meier_quantile(values: np.ndarray, censored: np.ndarray, p: float) -> float:
    """values (n,), censored (n,) bool -> the smallest value t with estimated P(T <= t) >= p; 0.0 if empty.
    At ties, events count before censored samples (the usual convention)."""
    if len(values) == 0:
        return 0.0
    order = np.lexsort((censored, values))          # by value, events first at ties
    v, c = values[order], censored[order]
    at_risk = len(v) - np.arange(len(v))            # (n,) samples still >= v[i]
    survival = np.cumprod(np.where(c, 1.0, 1.0 - 1.0 / at_risk))
    reached = np.nonzero(1.0 - survival >= p - 1e-12)[0]
    return float(v[reached[0]]) if len(reached) else float(v[-1])
