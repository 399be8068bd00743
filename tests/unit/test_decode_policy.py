"""The decode policy as a table: when a decodable group decodes, per policy, per missing slot."""
from __future__ import annotations

import pytest

from frontend.decode_policy import DEADLINE_MARGIN_S, MIN_SAMPLES, DecodePolicy, MissingSlot, WorkerLatencies

NOW = 100.0
FAR = NOW + 10.0  # a deadline that does not bind


def latencies(**per_worker: float) -> WorkerLatencies:
    """Each worker answered MIN_SAMPLES times in exactly that many seconds."""
    lat = WorkerLatencies()
    for worker, seconds in per_worker.items():
        for _ in range(MIN_SAMPLES):
            lat.record(worker, seconds)
    return lat


def slot(sent_at: float | None = NOW - 0.005, worker: str | None = "a", down: bool = False,
         deadline: float = FAR) -> MissingSlot:
    return MissingSlot(sent_at, worker, down, deadline)


ADAPTIVE = DecodePolicy("adaptive", quantile=95, slack=1.25)


@pytest.mark.parametrize("policy, missing, lat, want", [
    # eager (ParM): at once, whatever is missing
    (DecodePolicy("eager"), [slot()], latencies(a=0.010), NOW),
    # grace: a fixed wait from now, but never past the deadline's margin
    (DecodePolicy("grace", grace_s=0.3), [slot()], latencies(), NOW + 0.3),
    (DecodePolicy("grace", grace_s=0.3), [slot(deadline=NOW + 0.15)], latencies(), NOW + 0.15 - DEADLINE_MARGIN_S),
    # adaptive: sent 5 ms ago to a worker that takes 10 ms: overdue 12.5 ms after sending
    (ADAPTIVE, [slot()], latencies(a=0.010), NOW - 0.005 + 0.0125),
    # a worker that is known down, or no request out: at once
    (ADAPTIVE, [slot(down=True)], latencies(a=0.010), NOW),
    (ADAPTIVE, [slot(sent_at=None, worker=None)], latencies(a=0.010), NOW),
    # already overdue: at once (a time in the past)
    (ADAPTIVE, [slot(sent_at=NOW - 1.0)], latencies(a=0.010), NOW),
    # a slow worker's own estimate, not the cluster's, decides
    (ADAPTIVE, [slot(worker="b")], latencies(a=0.010, b=0.100), NOW - 0.005 + 0.125),
    # two missing (r=2): when the later one is overdue too
    (ADAPTIVE, [slot(), slot(worker="b")], latencies(a=0.010, b=0.100), NOW - 0.005 + 0.125),
    # the deadline caps the wait: a query is decoded, never turned into a 504 by waiting
    (ADAPTIVE, [slot(worker="b", deadline=NOW + 0.05)], latencies(a=0.010, b=0.100), NOW + 0.05 - DEADLINE_MARGIN_S),
    # nothing measured yet: the fallback wait
    (ADAPTIVE, [slot()], WorkerLatencies(), NOW - 0.005 + ADAPTIVE.fallback_s),
])
def test_decode_time(policy: DecodePolicy, missing: list[MissingSlot], lat: WorkerLatencies, want: float) -> None:
    assert max(policy.decode_at(NOW, missing, lat), NOW) == pytest.approx(want)


def test_a_worker_is_judged_by_the_lower_of_its_own_estimate_and_the_clusters() -> None:
    lat = latencies(a=0.010)
    lat.record("new", 0.005)  # one sample: not yet its own estimate
    cluster = lat.all.percentile(95)
    assert ADAPTIVE.overdue_after(lat, "new") == pytest.approx(1.25 * cluster)
    for _ in range(MIN_SAMPLES):
        lat.record("fast", 0.002)
        lat.record("slow", 0.500)  # slow for good: still decoded around at the cluster's pace
    assert ADAPTIVE.overdue_after(lat, "fast") == pytest.approx(1.25 * 0.002)
    assert ADAPTIVE.overdue_after(lat, "slow") == pytest.approx(1.25 * lat.all.percentile(95))


def test_an_answer_that_queued_is_not_mistaken_for_a_slow_one() -> None:
    """Latencies are recorded per queue place; a request sent behind 2 others is overdue 3x later."""
    lat = WorkerLatencies()
    for _ in range(MIN_SAMPLES):
        lat.record("a", 0.010, ahead=0)  # whole round trips of 10 ms alone...
        lat.record("a", 0.030, ahead=2)  # ... and 30 ms behind two others: 10 ms of service per place
    assert ADAPTIVE.overdue_after(lat, "a", ahead=0) == pytest.approx(1.25 * 0.010)
    assert ADAPTIVE.overdue_after(lat, "a", ahead=2) == pytest.approx(3 * 1.25 * 0.010)
    # a busy worker answering as it goes: its queue's 3 places bound the wait
    busy = MissingSlot(NOW - 0.005, "a", False, FAR, ahead=2, last_answer=NOW)
    assert ADAPTIVE.decode_at(NOW, [busy], lat) == pytest.approx(NOW - 0.005 + 3 * 0.0125)


def test_a_silent_worker_is_not_waited_for_however_long_its_queue() -> None:
    """A stalled worker holding 400 abandoned requests answers nothing: its new query is overdue after
    silence_places waits from its sending, not after 401 queue places (the deadline, in practice)."""
    lat = latencies(a=0.010)
    stalled = MissingSlot(NOW - 0.005, "a", False, FAR, ahead=400, last_answer=NOW - 60.0)
    assert ADAPTIVE.decode_at(NOW, [stalled], lat) == pytest.approx(NOW - 0.005 + 2 * 0.0125)
    # a worker that answered a moment ago is serving its queue: silence counts from that answer
    serving = MissingSlot(NOW - 0.005, "a", False, FAR, ahead=400, last_answer=NOW - 0.001)
    assert ADAPTIVE.decode_at(NOW, [serving], lat) == pytest.approx(NOW - 0.001 + 2 * 0.0125)


def test_a_worker_judged_slow_gets_no_queue_credit_and_no_slack() -> None:
    """Behind a request on a worker 5x slower than the rest, an output is due after one normal service
    (the cluster's p95), not after two slack-stretched places: what it holds is served slowly."""
    lat = latencies(a=0.010, b=0.010)
    busy = dict(sent_at=NOW - 0.005, worker="a", down=False, deadline=FAR, ahead=1, last_answer=NOW)
    assert ADAPTIVE.decode_at(NOW, [MissingSlot(**busy)], lat) == pytest.approx(NOW - 0.005 + 2 * 0.0125)
    assert ADAPTIVE.decision(NOW, [MissingSlot(**busy, slow=True)], lat) == (pytest.approx(NOW - 0.005 + 0.010),
                                                                            "overdue")


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="adaptive"):
        DecodePolicy("sometimes")


def test_fallback_copies_are_capped_at_a_fraction_of_the_queries() -> None:
    from frontend.fallback import CopyBudget

    budget = CopyBudget(fraction=0.05, burst=2.0)
    assert [budget.spend() for _ in range(3)] == [True, True, False]  # the burst, then nothing
    budget.earn(19)
    assert not budget.spend()  # 0.95 of a copy
    budget.earn(1)
    assert budget.spend() and not budget.spend()  # one copy per 20 queries
    budget.earn(10_000)
    assert budget.tokens == 2.0  # never more than the burst


def test_memoised_percentiles_equal_a_fresh_computation_at_every_step() -> None:
    """WorkerLatencies memoises percentile() between tracker recomputations; across filling, recomputes,
    censored samples and several workers and kinds it must answer exactly what it would compute afresh."""
    import random

    rng = random.Random(7)
    lat = WorkerLatencies(size=100)
    for step in range(600):
        worker = rng.choice("abc")
        lat.record(worker, rng.expovariate(100.0), ahead=rng.choice([0, 0, 1, 3]), censored=rng.random() < 0.1)
        for w in ("a", "b", "c", "never-seen", None):
            for q in (50.0, 95.0):
                for kind in WorkerLatencies.KINDS:
                    assert lat.percentile(w, q, kind) == lat._percentile(w, q, kind), (step, w, q, kind)


@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.parametrize("ahead", [0, 3, 400])
@pytest.mark.parametrize("lat", [latencies(), latencies(a=0.010, b=0.002), latencies(a=0.0004)])
def test_the_fallback_timers_shortcut_equals_the_full_rule_for_a_request_sent_just_now(
        slow: bool, ahead: int, lat: WorkerLatencies) -> None:
    """fallback.arm asks due_when_sent per data request instead of building a MissingSlot: the same time,
    whatever the queue (a deep one is cut short by the silence rule), speed, or data so far."""
    finish = ADAPTIVE.predict_finish(lat, "a", NOW, ahead)
    full = MissingSlot(NOW, "a", False, FAR, ahead=ahead, last_answer=NOW - 1.0, finish_at=finish, slow=slow)
    assert ADAPTIVE.due_when_sent(lat, "a", NOW, finish, slow) == pytest.approx(ADAPTIVE.due(full, lat))
