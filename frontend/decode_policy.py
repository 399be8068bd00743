"""When to decode: a coded group can rebuild its missing output once the parity output is in, but
the real output is often a moment behind. The policy picks the time to decode per group.

- ``adaptive`` (default): decode once every missing output is *overdue* for the worker serving it:
  sent longer ago than ``slack`` x its ``quantile``-th latency percentile per queue place, times
  the places it took (a healthy output is late mostly because it waited in its worker's queue,
  which the frontend knows), or sooner if the worker has gone silent (a stalled worker's queue is
  not being served, however long it is). At once when that worker is known down; never later than
  DEADLINE_MARGIN_S before the query's deadline.
- ``eager``: decode the moment it is possible (ParM's rule).
- ``grace``: wait a fixed time for the real output, also capped by the deadline.

Pure: times are plain floats on whatever clock the caller uses (the event loop's, in serving).
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from frontend.hedging import LatencyTracker

POLICIES = ("adaptive", "eager", "grace")
MIN_SAMPLES = 20         # a worker's own estimate is used once it has this many samples
DEADLINE_MARGIN_S = 0.002  # decode this long before the deadline: the decode and reply take ~0.1 ms


@dataclass(frozen=True)
class MissingSlot:
    """A data slot without its output: where and when its request went, and its query's deadline."""

    sent_at: float | None   # when the current request for it was sent; None: no request out
    worker: Hashable | None  # the worker holding that request; None: none (failed, or none healthy)
    down: bool               # that worker is known down (connection lost, failed probe)
    deadline: float
    ahead: int = 0           # requests the worker held when this one was sent (its queue)
    last_answer: float | None = None  # when that worker last answered anything (same clock as sent_at)


class WorkerLatencies:
    """Per worker (the last ``size`` answers) and across workers: round trips divided by the queue
    places they took (1 + requests ahead at sending), so a queued answer is not mistaken for a slow one.

    Only answers that arrived are recorded. An abandoned request (its group decoded it) is not: the
    other k - r outputs of every group still arrive, so a cluster that slows down as a whole is
    learnt from them, while a straggler's slow answers do not teach its own estimate to wait."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.by_worker: dict[Hashable, LatencyTracker] = {}   # per queue place
        self.all = LatencyTracker(2048)
        self.raw_by_worker: dict[Hashable, LatencyTracker] = {}  # whole round trips
        self.raw_all = LatencyTracker(2048)

    def record(self, worker: Hashable, seconds: float, ahead: int = 0) -> None:
        for trackers, overall, value in ((self.by_worker, self.all, seconds / (1 + max(ahead, 0))),
                                         (self.raw_by_worker, self.raw_all, seconds)):
            tracker = trackers.get(worker)
            if tracker is None:
                tracker = trackers[worker] = LatencyTracker(self.size)
            tracker.record(value)
            overall.record(value)

    def percentile(self, worker: Hashable | None, q: float, raw: bool = False) -> float | None:
        """The q-th percentile for ``worker``, per queue place (or of whole round trips: ``raw``): the lower
        of its own (once it has MIN_SAMPLES) and the cluster's, so a worker that is slow for good is still
        decoded around; None: no data."""
        trackers, overall = (self.raw_by_worker, self.raw_all) if raw else (self.by_worker, self.all)
        cluster = overall.percentile(q) if len(overall) >= MIN_SAMPLES else None
        tracker = trackers.get(worker) if worker is not None else None
        if tracker is not None and len(tracker) >= MIN_SAMPLES:
            own = tracker.percentile(q)
            return own if cluster is None else min(own, cluster)
        return cluster


@dataclass(frozen=True)
class DecodePolicy:
    kind: str = "adaptive"
    grace_s: float = 0.0        # grace: the fixed wait
    quantile: float = 95.0      # adaptive: overdue past slack x this percentile of the worker's latency
    slack: float = 1.25
    min_wait_s: float = 0.001   # adaptive: never call an output overdue sooner than this
    fallback_s: float = 0.050   # adaptive: the wait before any latency has been measured (deadline-capped)
    # adaptive: a worker that has answered nothing for this many of its overdue round trips (counted from
    # its last answer, or from this request's sending if later) is not serving its queue: its outputs are
    # due. Whole round trips, not queue places: a batching worker answers a queue at once, then is quiet.
    # Without it, a stalled worker's queue of abandoned requests made its queries wait for the deadline.
    silence_round_trips: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"decode policy must be one of {POLICIES}, got {self.kind!r}")

    def overdue_after(self, latencies: WorkerLatencies, worker: Hashable | None, ahead: int = 0) -> float:
        """Seconds after sending at which ``worker``'s output counts as late, ``ahead`` requests queued before it."""
        p = latencies.percentile(worker, self.quantile)
        per_place = self.fallback_s if p is None else max(self.min_wait_s, self.slack * p)
        return per_place * (1 + max(ahead, 0))

    def due(self, m: MissingSlot, latencies: WorkerLatencies) -> float:
        """When slot ``m``'s output is overdue: after its queue's worth of waits, or sooner if its worker
        has gone silent (answered nothing for ``silence_round_trips`` overdue round trips)."""
        return min(self._due_by_rule(m, latencies))

    def _due_by_rule(self, m: MissingSlot, latencies: WorkerLatencies) -> tuple[float, float]:
        """(overdue by its queue, overdue by its worker's silence) for slot ``m``."""
        assert m.sent_at is not None
        queued = m.sent_at + self.overdue_after(latencies, m.worker, m.ahead)
        raw = latencies.percentile(m.worker, self.quantile, raw=True)
        round_trip = self.fallback_s if raw is None else max(self.min_wait_s, self.slack * raw)
        silent_since = max(m.sent_at, m.last_answer if m.last_answer is not None else m.sent_at)
        return queued, silent_since + self.silence_round_trips * round_trip

    def decode_at(self, now: float, missing: Iterable[MissingSlot], latencies: WorkerLatencies) -> float:
        """When to decode a group that could decode now; a time <= ``now`` means at once."""
        return self.decision(now, missing, latencies)[0]

    def decision(self, now: float, missing: Iterable[MissingSlot],
                 latencies: WorkerLatencies) -> tuple[float, str]:
        """(when to decode, the rule that sets that time): "down", "overdue", "silent", "deadline",
        "eager" or "grace". The answers it produces are recorded with the rule (Answer.path)."""
        missing = list(missing)
        latest = min((m.deadline for m in missing), default=now) - DEADLINE_MARGIN_S
        if self.kind == "eager":
            return now, "eager"
        if self.kind == "grace":
            at = now + self.grace_s
            return (at, "grace") if at <= latest else (latest, "deadline")
        due, rule = float("-inf"), "down"  # the latest-due missing output sets the time and names the rule
        for m in missing:
            if m.down or m.sent_at is None or m.worker is None:
                continue  # nothing to wait for: due now
            queued, silent = self._due_by_rule(m, latencies)
            if min(queued, silent) > due:
                due, rule = min(queued, silent), ("overdue" if queued <= silent else "silent")
        due = max(due, now)
        return (due, rule) if due <= latest else (latest, "deadline")
