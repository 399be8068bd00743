"""Choosing a worker where a slow one cannot be decoded around (frontend.balance, WorkerPool.pick with
``by_pace``): the per-request estimate, the stretch of a slow worker's queue, the choice itself, the
estimate fed by abandoned replies, and, in the simulator, a slowed worker left almost idle by uncoded
modes while coded data queries still use it."""
from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from frontend.balance import SLOW, PeakEwma, SlowJudge, choice_keys
from frontend.config import FrontendConfig
from frontend.pool import WorkerPool
from frontend.worker_client import Sent, WorkerClient
from harness.plan import parse_plan
from harness.simulate import run_raw

INFO = {"kind": "base", "model_id": "m", "input_shape": [1], "meta": {}}


def test_a_slower_reply_replaces_the_estimate_a_faster_one_moves_it_half_way_and_idle_time_decays_it() -> None:
    pace = PeakEwma(decay_s=1.0)
    assert pace.value(0.0) == 0.0
    pace.observe(0.040, now=10.0)
    assert pace.value(10.0) == pytest.approx(0.040)
    pace.observe(0.200, now=10.0)  # one slow reply is enough to be judged slow
    assert pace.value(10.0) == pytest.approx(0.200)
    pace.observe(0.040, now=10.0)
    assert pace.value(10.0) == pytest.approx(0.120)
    assert pace.value(11.0) == pytest.approx(0.120 / math.e)  # unused for one decay time


def test_only_a_worker_slow_times_the_median_has_its_queue_stretched() -> None:
    keys = choice_keys([0, 0, 1, 2], [0.040, 0.080, 0.040, 0.040])
    assert keys == [1.0, 1.0, 2.0, 3.0]  # 2x the median: judged by its queue alone
    slow = 5 * 0.040
    assert SLOW < 5
    assert choice_keys([0, 1, 1], [slow, 0.040, 0.040]) == pytest.approx([5.0, 2.0, 2.0])
    assert choice_keys([2, 0, 1], [0.0, 0.0, 0.0]) == [3.0, 1.0, 2.0]  # no estimates yet: least-loaded
    assert choice_keys([0, 0], [slow, 0.040]) == pytest.approx([5.0, 1.0])  # of two, the faster is typical


def test_the_slow_judge_compares_with_the_lower_median_and_refreshes_it_at_most_every_interval() -> None:
    judge, asked = SlowJudge(every_s=0.05), []

    def paces() -> list[float]:
        asked.append(1)
        return [0.040, 0.040, 0.200] if len(asked) == 1 else [0.200, 0.200, 0.200]

    assert judge.is_slow(0.200, paces, now=1.0) and not judge.is_slow(0.100, paces, now=1.01)
    assert len(asked) == 1  # cached within the interval
    assert not judge.is_slow(0.200, paces, now=1.06)  # everyone is that slow now: none is slow
    assert not SlowJudge().is_slow(0.2, lambda: [0.0, 0.0], now=0.0)  # no estimates yet: nobody is


def _pool(n: int) -> WorkerPool:
    cfg = FrontendConfig(data=tuple(("127.0.0.1", 1000 + i) for i in range(n)), mode="equal")
    pool = WorkerPool(cfg)
    for w in pool.data:
        w.info, w.probe_ok = dict(INFO), True
        w._mark_connected()
    return pool


def _hold(w: WorkerClient, n: int) -> None:
    """Make ``w`` look like it holds ``n`` requests (replacing what _hold gave it before)."""
    for rid in range(n):
        w._pending[-1 - rid] = Sent(0.0, 0, True, None, raw=False)


async def test_pick_by_pace_passes_over_an_idle_slow_worker_until_the_others_queue_deeper() -> None:
    pool = _pool(3)
    slow, a, b = pool.data
    now = asyncio.get_running_loop().time()
    for w, seconds in ((slow, 0.200), (a, 0.040), (b, 0.040)):
        w.pace.observe(seconds, now)
    _hold(a, 1)
    _hold(b, 1)
    assert pool.pick(pool.data) is slow  # least-loaded: the idle one, however slow
    assert pool.pick(pool.data, by_pace=True) in (a, b)  # second place on a normal worker beats a 5x one
    _hold(a, 5)
    _hold(b, 5)  # 5 in flight each: the 6th place there is later than the 1st on a 5x slower worker
    assert pool.pick(pool.data, by_pace=True) is slow


async def test_an_abandoned_request_s_late_reply_still_feeds_the_estimate() -> None:
    client = WorkerClient("127.0.0.1", 1)
    loop = asyncio.get_running_loop()
    calls: list[Any] = []
    sent = client._pending[7] = Sent(loop.time() - 0.5, 0, True, lambda *a: calls.append(a), raw=False)  # half a second ago
    sent.abandon()  # its caller gave up (the query was decoded)
    client._on_messages([{"type": "result", "id": 7}])
    assert client.pace.value(loop.time()) == pytest.approx(0.5, rel=0.05)
    assert client.answered == 1 and 7 not in client._pending and calls == []  # no callback: it was abandoned
    client._pending[8] = Sent(loop.time() - 0.0001, 0, False, lambda *a: calls.append(a), raw=True)  # a ping
    client._on_messages([{"type": "pong", "id": 8}])  # answered at once, even by a slow worker
    assert client.pace.value(loop.time()) == pytest.approx(0.5, rel=0.05) and client.answered == 2
    assert calls == [({"type": "pong", "id": 8}, None)]


def test_in_the_simulator_uncoded_modes_leave_a_slowed_worker_almost_idle_and_coded_still_uses_it() -> None:
    plan = parse_plan({"seed": 1, "faults": [{"kind": "contention", "workers": [0], "rate_per_s": 1000,
                                              "factor": 5, "duration_ms": 100000}]})  # worker 0: 5x, always
    share = {}
    for mode in ("equal", "coded"):
        raw = run_raw({"workers": 4, "k": 2, "rate": 200.0, "count": 2000, "arrivals": "poisson",
                       "service": "fixed:ms=5", "mode": mode, "plan": plan})
        first = raw["worker"][raw["worker"] >= 0]
        share[mode] = float(np.mean(first == 0))
        if mode == "equal":
            latency_ms = (raw["done"] - raw["arrivals"]) * 1000
            assert np.percentile(latency_ms, 99) < 10  # least-loaded alone gave 25 ms (one slowed service)
    assert share["equal"] < 0.02   # least-loaded alone sent it 12%
    assert share["coded"] > 0.10   # decoded around, it still serves: capacity kept
