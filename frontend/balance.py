"""Which worker gets the next request where a slow one cannot be decoded around: least-loaded,
but a worker much slower than the others counts its queue stretched by how much slower it is.
Speed is a per-worker peak-EWMA of time per request (as in Finagle's and linkerd's "peak EWMA"
balancers), fed by every reply its client receives. Used by frontend.pool.

Least-loaded choice alone sends a slowed worker a new request whenever it is idle, so a worker
that serves 5x slower for two seconds still takes a request per (slow) service, and each of them
waits that long. The estimate jumps to a slow reply at once, so such a worker takes a request only
once the others hold ~5 each; it decays while unused (and the health probe keeps measuring it),
so a worker that has recovered is back in rotation within about a second. Only a worker SLOW x the
median is stretched: with exponential service times one long reply says nothing of the next.
"""
from __future__ import annotations

import math
from collections.abc import Callable

DECAY_S = 1.0     # an unused worker's estimate falls by e in this long
WEIGHT = 0.5      # each reply moves the estimate this far towards it: one long service is not a slow worker
SLOW = 3.0        # a worker whose estimate is this many times the typical one is slow


class PeakEwma:
    """Seconds per request: a slower reply replaces the estimate, a faster one moves it half way;
    between replies it decays towards zero (an idle worker is a good choice)."""

    __slots__ = ("decay_s", "estimate", "stamp")

    def __init__(self, decay_s: float = DECAY_S) -> None:
        self.decay_s = decay_s
        self.estimate = 0.0  # seconds per request, as of ``stamp``
        self.stamp = 0.0

    def value(self, now: float) -> float:
        """The estimate at ``now`` (same clock as ``observe``)."""
        if self.estimate == 0.0:
            return 0.0
        return self.estimate * math.exp(-max(now - self.stamp, 0.0) / self.decay_s)

    def observe(self, seconds: float, now: float) -> None:
        """A request took ``seconds`` of this worker's time (a round trip per queue place it took)."""
        current = self.value(now)
        self.estimate = seconds if seconds >= current else current + WEIGHT * (seconds - current)
        self.stamp = now


def choice_keys(in_flight: list[int], paces: list[float]) -> list[float]:
    """Per worker, the queue place a request sent now would take (1 + in flight), stretched by how
    many times slower than the typical (median) worker it is, for the workers that are SLOW x slower;
    the others are judged by their queues alone (a short queue says more than a noisy estimate)."""
    typical = sorted(paces)[(len(paces) - 1) // 2]  # the lower median: of two workers, the faster
    limit = SLOW * typical
    return [(n + 1) * (p / typical if p > limit > 0 else 1.0) for n, p in zip(in_flight, paces)]


class SlowJudge:
    """Which workers are SLOW x slower than the typical (lower-median) one now, for the decode policy:
    the typical pace is recomputed at most every ``every_s`` (the hot path asks per missing output)."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s = every_s
        self._typical = 0.0
        self._at = float("-inf")

    def is_slow(self, worker_pace: float, paces: Callable[[], list[float]], now: float) -> bool:
        """``worker_pace``: one worker's pace now; ``paces``: every candidate's, asked when the cache is old."""
        limit = self.limit(paces, now)
        return limit > 0.0 and worker_pace > limit

    def limit(self, paces: Callable[[], list[float]], now: float) -> float:
        """The pace above which a worker is slow now; 0.0 while no worker has an estimate (none is)."""
        if now - self._at >= self.every_s:
            values = paces()
            self._typical = sorted(values)[(len(values) - 1) // 2] if values else 0.0
            self._at = now
        return SLOW * self._typical
