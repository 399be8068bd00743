"""Latency percentiles that count abandoned requests: a request the frontend stopped waiting for
(its query was decoded or answered by a copy) says only that its worker took longer than it was
waited for. Dropping it biases the record low (the slow tail is what gets abandoned), and a decode
policy fed that record decodes ever sooner; so the percentile is the Kaplan-Meier estimate over
answered (event) and abandoned (right-censored) samples. Used by frontend.decode_policy.
"""
from __future__ import annotations

import numpy as np

RECOMPUTE_EVERY = 64  # percentiles are recomputed in batches of samples, not per request
FILLING = 20          # up to this many samples, a record is "filling" (frontend.decode_policy.MIN_SAMPLES)


class SurvivalTracker:
    """The last ``size`` samples (seconds, censored or not), with cached percentiles. The samples live in
    numpy ring buffers: a recompute reads them as they are (from a deque, copying 2,048 Python floats
    into an array cost as much as the estimate itself)."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._values = np.zeros(size)                 # (size,) seconds; the first _n are in use
        self._censored = np.zeros(size, dtype=bool)   # (size,)
        self._n = 0                                   # samples held (at most size)
        self._next = 0                                # where the next sample goes
        self._since = 0
        self._cache: dict[float, float] = {}
        self.filling = True  # still within its first FILLING samples: every sample may move a percentile

    def __len__(self) -> int:
        return self._n

    def record(self, seconds: float, censored: bool = False) -> bool:
        """Add a sample (replacing the oldest once full); True when this dropped the cached percentiles."""
        i = self._next
        self._values[i] = seconds
        self._censored[i] = censored
        self._next = 0 if i + 1 == self.size else i + 1
        if self._n < self.size:
            self._n += 1
            if self._n > FILLING:
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
            n = self._n
            self._cache[q] = kaplan_meier_quantile(self._values[:n], self._censored[:n], q / 100)
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
