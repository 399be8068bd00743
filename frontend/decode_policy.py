"""When to decode: a coded group can rebuild its missing output once the parity output is in, but
the real output is often a moment behind. The policy picks the time to decode per group.

- ``adaptive`` (default): decode once every missing output is *overdue* for the worker serving it:
  sent longer ago than ``slack`` x its ``quantile``-th latency percentile per queue place, times
  the places it took (its own, plus up to ``queue_credit`` it queued behind: a healthy output is
  late mostly because it waited in its worker's queue, which the frontend knows). At once when that worker is known down; never later than
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


class WorkerLatencies:
    """Per worker (the last ``size`` answers) and across workers: round trips divided by the queue
    places they took (1 + requests ahead at sending), so a queued answer is not mistaken for a slow one.

    Only answers that arrived are recorded. An abandoned request (its group decoded it) is not: the
    other k - r outputs of every group still arrive, so a cluster that slows down as a whole is
    learnt from them, while a straggler's slow answers do not teach its own estimate to wait."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.by_worker: dict[Hashable, LatencyTracker] = {}
        self.all = LatencyTracker(2048)

    def record(self, worker: Hashable, seconds: float, ahead: int = 0) -> None:
        tracker = self.by_worker.get(worker)
        if tracker is None:
            tracker = self.by_worker[worker] = LatencyTracker(self.size)
        per_place = seconds / (1 + max(ahead, 0))
        tracker.record(per_place)
        self.all.record(per_place)

    def percentile(self, worker: Hashable | None, q: float) -> float | None:
        """The q-th percentile (seconds per queue place) for ``worker``: the lower of its own (once it has
        MIN_SAMPLES) and the cluster's, so a worker that is slow for good is still decoded around; None: no data."""
        cluster = self.all.percentile(q) if len(self.all) >= MIN_SAMPLES else None
        tracker = self.by_worker.get(worker) if worker is not None else None
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
    # adaptive: queue places credited beyond the request's own. A healthy answer that queued behind one
    # other is not late; a longer queue is itself the sign of a slow or stalled worker (its abandoned
    # requests still count): crediting all of it made a stalled worker's queries wait for the deadline.
    queue_credit: int = 1

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"decode policy must be one of {POLICIES}, got {self.kind!r}")

    def overdue_after(self, latencies: WorkerLatencies, worker: Hashable | None, ahead: int = 0) -> float:
        """Seconds after sending at which ``worker``'s output counts as late, ``ahead`` requests queued before it."""
        p = latencies.percentile(worker, self.quantile)
        places = 1 + min(max(ahead, 0), self.queue_credit)
        if p is None:
            return self.fallback_s * places
        return max(self.min_wait_s, self.slack * p * places)

    def decode_at(self, now: float, missing: Iterable[MissingSlot], latencies: WorkerLatencies) -> float:
        """When to decode a group that could decode now; a time <= ``now`` means at once."""
        missing = list(missing)
        latest = min((m.deadline for m in missing), default=now) - DEADLINE_MARGIN_S
        if self.kind == "eager":
            return now
        if self.kind == "grace":
            return min(now + self.grace_s, latest)
        due = now
        for m in missing:
            if m.down or m.sent_at is None or m.worker is None:
                continue  # nothing to wait for: due now
            due = max(due, m.sent_at + self.overdue_after(latencies, m.worker, m.ahead))
        return min(due, latest)
