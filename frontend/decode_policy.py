"""When to decode: a coded group can rebuild its missing output once the parity output is in, but
the real output is often a moment behind. The policy picks the time to decode per group.

- ``adaptive`` (default): decode once every missing output is *overdue* for the worker serving it:
  later than ``slack`` x the time from its sending to when that worker should have finished it.
  The frontend predicts that finish per worker, in order (a request starts when the one before it
  on that worker should have finished, or at its sending if the worker was idle), from the
  ``quantile``-th percentile of its service time, learnt from requests sent to it while idle; so
  a healthy answer that waited in a queue is not mistaken for a slow one. Sooner if the worker has
  gone silent (a stalled worker's queue is not being served, however long it is), or if it is far
  slower than the others now (frontend.balance): then one normal service time after sending, with
  no queue credit, as what it holds is served slowly. At once when
  that worker is known down; never later than DEADLINE_MARGIN_S before the query's deadline.
- ``eager``: decode the moment it is possible (ParM's rule).
- ``grace``: wait a fixed time for the real output, also capped by the deadline.

Pure: times are plain floats on whatever clock the caller uses (the event loop's, in serving).
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from frontend.survival import FILLING, SurvivalTracker

POLICIES = ("adaptive", "eager", "grace")
MIN_SAMPLES = FILLING    # a worker's own estimate is used once it has this many samples (20)
DEADLINE_MARGIN_S = 0.002  # decode this long before the deadline: the decode and reply take ~0.1 ms


class MissingSlot(NamedTuple):  # a tuple: built per missing output on the hot path
    """A data slot without its output: where and when its request went, and its query's deadline."""

    sent_at: float | None   # when the current request for it was sent; None: no request out
    worker: Hashable | None  # the worker holding that request; None: none (failed, or none healthy)
    down: bool               # that worker is known down (connection lost, failed probe)
    deadline: float
    ahead: int = 0           # requests the worker held when this one was sent (its queue)
    last_answer: float | None = None  # when that worker last answered anything (same clock as sent_at)
    finish_at: float | None = None    # when its worker should have finished it (WorkerLatencies.expect)
    slow: bool = False       # its worker is far slower than the others now (frontend.balance.SlowJudge)


class WorkerLatencies:
    """Per worker (the last ``size`` answers) and across workers, three records of answered requests:
    ``idle``, round trips of requests sent to an idle worker (its service time); ``place``, round
    trips divided by the queue places they took (1 + requests ahead at sending), the fallback while
    too few idle samples exist; ``raw``, whole round trips. And, per worker, when it should have
    finished what it holds (``free_at``), the chain ``expect`` extends with each request sent.

    An abandoned request (its query decoded, or answered by a copy) is recorded as censored: it took
    at least that long (frontend.survival). Without it the record loses exactly the slow tail and the
    policy decodes ever sooner (a healthy cluster with exponential service times answered 9% degraded).
    A worker that straggles does raise its own estimate, but it is judged by the lower of its own and
    the cluster's, so it is still decoded around."""

    KINDS = ("idle", "place", "raw")

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.by_worker: dict[str, dict[Hashable, SurvivalTracker]] = {kind: {} for kind in self.KINDS}
        self.overall = {kind: SurvivalTracker(2048) for kind in self.KINDS}
        self.free_at: dict[Hashable, float] = {}
        # (worker, q, kind) -> percentile(): the hot path asks several times per query, and the answer
        # only changes when a tracker recomputes (every RECOMPUTE_EVERY samples) or is still filling
        self._memo: dict[tuple[Hashable | None, float, str], float | None] = {}

    @property
    def all(self) -> SurvivalTracker:
        """The cluster's per-queue-place record."""
        return self.overall["place"]

    def record(self, worker: Hashable, seconds: float, ahead: int = 0, censored: bool = False) -> None:
        """A round trip of ``seconds`` (at least that long, if ``censored``) from a request sent with
        ``ahead`` requests before it on ``worker``."""
        if ahead <= 0:
            self._record("idle", worker, seconds, censored)
            self._record("place", worker, seconds, censored)
        else:
            self._record("place", worker, seconds / (1 + ahead), censored)
        self._record("raw", worker, seconds, censored)

    def _record(self, kind: str, worker: Hashable, value: float, censored: bool) -> None:
        tracker = self.by_worker[kind].get(worker)
        if tracker is None:
            tracker = self.by_worker[kind][worker] = SurvivalTracker(self.size)
        overall = self.overall[kind]
        changed = tracker.record(value, censored) | overall.record(value, censored)
        if changed or tracker.filling or overall.filling:
            self._memo.clear()

    def percentile(self, worker: Hashable | None, q: float, kind: str = "place") -> float | None:
        """The q-th percentile of ``kind`` for ``worker``: the lower of its own (once it has MIN_SAMPLES)
        and the cluster's, so a worker that is slow for good is still decoded around; None: no data."""
        key = (worker, q, kind)
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = self._percentile(worker, q, kind)
            return value

    def _percentile(self, worker: Hashable | None, q: float, kind: str) -> float | None:
        overall = self.overall[kind]
        cluster = overall.percentile(q) if len(overall) >= MIN_SAMPLES else None
        tracker = self.by_worker[kind].get(worker) if worker is not None else None
        if tracker is not None and len(tracker) >= MIN_SAMPLES:
            own = tracker.percentile(q)
            return own if cluster is None else min(own, cluster)
        return cluster

    def service(self, worker: Hashable | None, q: float) -> float | None:
        """The q-th percentile of ``worker``'s service time: from idle sends, else per queue place."""
        idle = self.percentile(worker, q, "idle")
        return idle if idle is not None else self.percentile(worker, q, "place")

    def expect(self, worker: Hashable, sent_at: float, ahead: int, service_s: float) -> float:
        """When ``worker`` should finish a request sent at ``sent_at`` with ``ahead`` requests before it:
        after the one before it should have finished (or at once if idle), plus ``service_s``."""
        start = sent_at if ahead <= 0 else max(sent_at, self.free_at.get(worker, sent_at))
        finish = self.free_at[worker] = start + service_s
        return finish


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

    def overdue_s(self, latencies: WorkerLatencies, worker: Hashable | None) -> float:
        """How long one of ``worker``'s services may take before it is late: ``slack`` x its
        ``quantile``-th percentile (at least ``min_wait_s``), or ``fallback_s`` before any data."""
        p = latencies.service(worker, self.quantile)
        return self.fallback_s if p is None else max(self.min_wait_s, self.slack * p)

    def predict_finish(self, latencies: WorkerLatencies, worker: Hashable, sent_at: float, ahead: int) -> float:
        """When ``worker`` should finish a request sent now (``sent_at``, ``ahead`` before it), at the
        ``quantile``-th percentile of its service; extends that worker's chain of predictions."""
        return latencies.expect(worker, sent_at, ahead, self.overdue_s(latencies, worker) / self.slack)

    def overdue_after(self, latencies: WorkerLatencies, worker: Hashable | None, ahead: int = 0) -> float:
        """Seconds after sending at which ``worker``'s output counts as late when its finish was not
        predicted: one overdue service time per queue place it took (1 + ``ahead``)."""
        return self.overdue_s(latencies, worker) * (1 + max(ahead, 0))

    def due(self, m: MissingSlot, latencies: WorkerLatencies) -> float:
        """When slot ``m``'s output is overdue: after its queue's worth of waits, or sooner if its worker
        has gone silent (answered nothing for ``silence_round_trips`` overdue round trips)."""
        return min(self._due_by_rule(m, latencies))

    def _due_by_rule(self, m: MissingSlot, latencies: WorkerLatencies) -> tuple[float, float]:
        """(overdue by its queue, overdue by its worker's silence) for slot ``m``."""
        assert m.sent_at is not None
        queued = self._queued_due(latencies, m.worker, m.sent_at, m.ahead, m.finish_at, m.slow)
        silent_since = max(m.sent_at, m.last_answer if m.last_answer is not None else m.sent_at)
        return queued, silent_since + self.silence_round_trips * self._round_trip(latencies, m.worker)

    def due_when_sent(self, latencies: WorkerLatencies, worker: Hashable, sent_at: float, finish_at: float,
                      slow: bool) -> float:
        """``due()`` of a request sent just now, its worker silent since (so silence counts from its
        sending): the same rules without building a MissingSlot, as every data request asks it once."""
        return min(self._queued_due(latencies, worker, sent_at, 0, finish_at, slow),
                   sent_at + self.silence_round_trips * self._round_trip(latencies, worker))

    def _queued_due(self, latencies: WorkerLatencies, worker: Hashable | None, sent_at: float, ahead: int,
                    finish_at: float | None, slow: bool) -> float:
        """When a request is overdue by its queue: ``slack`` x the wait until its predicted finish."""
        if slow:  # no queue credit and no slack: what it holds is served slowly, so its output will be late
            return sent_at + self.overdue_s(latencies, None) / self.slack
        if finish_at is not None:
            return sent_at + self.slack * max(finish_at - sent_at, 0.0)
        return sent_at + self.overdue_after(latencies, worker, ahead)

    def _round_trip(self, latencies: WorkerLatencies, worker: Hashable | None) -> float:
        """A late whole round trip on ``worker``: ``slack`` x its raw percentile (``fallback_s`` before data)."""
        raw = latencies.percentile(worker, self.quantile, "raw")
        return self.fallback_s if raw is None else max(self.min_wait_s, self.slack * raw)

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
