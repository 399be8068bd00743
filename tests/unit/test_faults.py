"""Fault injection: spec parsing, the pure per-request decision, the async hook, the slow
factor, and calibrated service times (workers.model.parse_service_time, LoadedModel.run_batch)."""
from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workers.faults import (Action, Fault, FaultInjector, InjectedDrop, InjectedError, decide, parse,
                            sample_delay_ms, slow_factor)
from workers.model import LoadedModel, load_model, parse_service_time


@pytest.mark.parametrize("spec,want", [
    ("none", ()),
    ("", ()),
    ("delay:ms=20", (Fault("delay", mean_ms=20.0),)),
    ("delay:mean_ms=20,dist=exp", (Fault("delay", mean_ms=20.0, dist="exp"),)),
    ("delay:ms=5,dist=uniform,p=0.1", (Fault("delay", p=0.1, mean_ms=5.0, dist="uniform"),)),
    ("stall", (Fault("stall"),)),
    ("error", (Fault("error"),)),
    ("error:p=0.5", (Fault("error", p=0.5),)),
    ("crash", (Fault("crash"),)),
    ("crash:after=3", (Fault("crash", after=3),)),
    ("drop:p=1", (Fault("drop"),)),
    ("delay:ms=5+error:p=0.1", (Fault("delay", mean_ms=5.0), Fault("error", p=0.1))),
])
def test_parse_good(spec: str, want: tuple[Fault, ...]) -> None:
    assert parse(spec) == want


@pytest.mark.parametrize("spec,bad", [
    ("explode", "explode"),
    ("delay", "delay"),                      # needs ms or mean_ms
    ("delay:ms=5,mean_ms=5", "delay"),
    ("delay:ms=abc", "ms=abc"),
    ("delay:ms=-1", "delay:ms=-1"),
    ("delay:ms=5,dist=normal", "normal"),
    ("error:p=1.5", "error:p=1.5"),
    ("error:p=nan", "error:p=nan"),
    ("error:q=1", "q=1"),
    ("stall:ms=3", "ms=3"),
    ("crash:after=-1", "crash:after=-1"),
    ("crash:after=1.5", "crash:after=1.5"),
    ("delay:ms=5+bogus", "bogus"),
    ("delay:ms=5+", "''"),
    ("error:p", "'p'"),
])
def test_parse_bad_names_the_part(spec: str, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(spec)
    assert bad in str(info.value)


def test_decide_fractions_follow_p() -> None:
    rng, faults = random.Random(0), parse("error:p=0.3+drop:p=0.1")
    actions = [decide(faults, rng, i) for i in range(5000)]
    assert 0.27 < sum(a.error for a in actions) / 5000 < 0.33
    assert 0.08 < sum(a.drop for a in actions) / 5000 < 0.12


def test_decide_is_deterministic_given_rng() -> None:
    faults = parse("delay:mean_ms=10,dist=exp,p=0.5+error:p=0.2")
    a = [decide(faults, random.Random(7), i) for i in range(100)]
    b = [decide(faults, random.Random(7), i) for i in range(100)]
    assert a == b


def test_no_fault_is_a_plain_action() -> None:
    assert decide((), random.Random(0), 0) == Action()


def test_crash_after_n() -> None:
    faults, rng = parse("crash:after=3"), random.Random(0)
    assert [decide(faults, rng, i).crash for i in range(5)] == [False, False, False, True, True]
    assert decide(parse("crash"), rng, 0).crash


def test_delay_distributions() -> None:
    rng = random.Random(3)
    assert sample_delay_ms(Fault("delay", mean_ms=20.0), rng) == 20.0
    uni = [sample_delay_ms(Fault("delay", mean_ms=20.0, dist="uniform"), rng) for _ in range(4000)]
    exp = [sample_delay_ms(Fault("delay", mean_ms=20.0, dist="exp"), rng) for _ in range(4000)]
    assert 0 <= min(uni) and max(uni) <= 40 and 18 < sum(uni) / len(uni) < 22
    assert 0 <= min(exp) and 18 < sum(exp) / len(exp) < 22 and max(exp) > 60  # heavy tail present
    assert decide(parse("delay:ms=20+delay:ms=5"), rng, 0).delay_s == pytest.approx(0.025)


async def test_injector_error_drop_and_none() -> None:
    inj = FaultInjector("error")
    with pytest.raises(InjectedError):
        await inj.before_request()
    inj.set("drop")
    with pytest.raises(InjectedDrop):
        await inj.before_request()
    inj.set("none")
    await inj.before_request()
    assert inj.spec == "none"


async def test_bad_set_keeps_old_spec() -> None:
    inj = FaultInjector("error:p=0.5")
    with pytest.raises(ValueError):
        inj.set("error:p=2")
    assert inj.spec == "error:p=0.5"


async def test_delay_sleeps() -> None:
    inj = FaultInjector("delay:ms=30")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await inj.before_request()
    assert loop.time() - t0 >= 0.025


async def test_stall_released_on_set() -> None:
    inj = FaultInjector("stall+error")
    waiters = [asyncio.create_task(inj.before_request()) for _ in range(3)]
    await asyncio.sleep(0.02)
    assert not any(w.done() for w in waiters)
    inj.set("none")
    # Released requests proceed normally: the old spec's error no longer applies to them.
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=1)


async def test_delay_in_progress_finishes_its_time_across_spec_changes() -> None:
    # Contention windows change specs often; a delay already sampled must not be cut short.
    inj = FaultInjector("delay:ms=150")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    waiter = asyncio.create_task(inj.before_request())
    await asyncio.sleep(0.01)
    inj.set("delay:ms=150+slow:factor=4")
    inj.set("none")
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await asyncio.wait_for(waiter, timeout=1)
    assert loop.time() - t0 >= 0.14


async def test_stall_survives_a_spec_change_that_keeps_stall() -> None:
    inj = FaultInjector("stall")
    waiter = asyncio.create_task(inj.before_request())
    await asyncio.sleep(0.01)
    inj.set("stall+slow:factor=5")  # a contention window opening during the stall
    await asyncio.sleep(0.02)
    assert not waiter.done()
    inj.set("slow:factor=5")  # the stall is lifted, the contention window holds
    await asyncio.wait_for(waiter, timeout=1)


def test_slow_parse_and_factor() -> None:
    assert parse("slow:factor=3") == (Fault("slow", factor=3.0),)
    assert slow_factor(parse("slow:factor=2+delay:ms=1+slow:factor=1.5")) == pytest.approx(3.0)
    assert slow_factor(parse("none")) == 1.0
    for bad in ("slow", "slow:factor=0.5", "slow:factor=nan", "slow:p=1"):
        with pytest.raises(ValueError):
            parse(bad)


def test_slow_does_not_shift_the_delay_sequence() -> None:
    plain_ = [decide(parse("delay:mean_ms=5,dist=exp"), random.Random(1), i) for i in range(50)]
    slowed = [decide(parse("slow:factor=4+delay:mean_ms=5,dist=exp"), random.Random(1), i) for i in range(50)]
    assert plain_ == slowed


async def test_injector_tracks_slow_factor() -> None:
    inj = FaultInjector("slow:factor=4")
    assert inj.slow_factor == 4.0
    await inj.before_request()  # slow never delays admission: it stretches the batch instead
    inj.set("none")
    assert inj.slow_factor == 1.0


def _timed_model(batch_time: Any = None, service_s: float = 0.0, infer_s: float = 0.0) -> LoadedModel:
    def predict(x: np.ndarray) -> np.ndarray:
        time.sleep(infer_s)  # stands in for real inference
        return np.zeros((len(x), 2), np.float32)
    return LoadedModel(predict, (1,), 2, {}, service_time=lambda: service_s, batch_time=batch_time)


def _elapsed(model: LoadedModel, slow: float = 1.0) -> float:
    t0 = time.perf_counter()
    model.run_batch(np.zeros((1, 1), np.float32), slow)
    return time.perf_counter() - t0


def test_slow_multiplies_a_sleep_based_service_time() -> None:
    model = _timed_model(service_s=0.02)
    assert 0.019 <= _elapsed(model) < 0.035
    assert 0.079 <= _elapsed(model, slow=4) < 0.1


def test_slow_multiplies_real_inference_time() -> None:
    model = _timed_model(infer_s=0.02)  # no synthetic sleep: (F-1) x inference is slept after it
    assert 0.059 <= _elapsed(model, slow=3) < 0.08


def test_calibrated_service_time_is_the_total_and_keeps_outputs() -> None:
    model = _timed_model(batch_time=parse_service_time("fixed:ms=40"), infer_s=0.01)
    assert 0.039 <= _elapsed(model) < 0.055  # 10 ms inference + 30 ms sleep, not 50
    assert 0.079 <= _elapsed(model, slow=2) < 0.1
    slow_model = _timed_model(batch_time=parse_service_time("fixed:ms=5"), infer_s=0.02)
    assert 0.019 <= _elapsed(slow_model) < 0.035  # inference longer than the draw: never cut short


def test_calibrated_service_time_wraps_a_real_model() -> None:
    model = load_model("builtin:linear")
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    model.batch_time = parse_service_time("fixed:ms=15")
    t0 = time.perf_counter()
    y = model.run_batch(x)
    assert time.perf_counter() - t0 >= 0.014
    np.testing.assert_allclose(y, load_model("builtin:linear").predict(x), rtol=1e-6)


def test_service_time_distributions(tmp_path: Path) -> None:
    assert parse_service_time("fixed:ms=5")() == pytest.approx(0.005)
    draw = parse_service_time("exp:mean_ms=10,seed=1")
    exp = [draw() for _ in range(4000)]
    assert 0.009 < sum(exp) / len(exp) < 0.011
    draw = parse_service_time("lognormal:median_ms=10,sigma=0.3,seed=2")
    logn = sorted(draw() for _ in range(4001))
    assert 0.0095 < logn[2000] < 0.0105
    path = tmp_path / "st.json"
    path.write_text(json.dumps({"samples_ms": [1, 3]}))
    draw = parse_service_time(f"file:{path}")
    assert {round(draw() * 1000) for _ in range(200)} == {1, 3}


@pytest.mark.parametrize("spec", ["fixed", "fixed:ms=x", "gauss:ms=3", "exp:ms=3", "lognormal:median_ms=5",
                                  "file:/nonexistent.json", "fixed:ms=-1"])
def test_service_time_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_service_time(spec)


async def test_crash_calls_exit_after_n() -> None:
    codes: list[int] = []
    inj = FaultInjector("crash:after=2", exit_fn=codes.append)
    await inj.before_request()
    await inj.before_request()
    assert codes == []
    with pytest.raises(InjectedDrop):  # only because the stub exit returns
        await inj.before_request()
    assert codes == [1]
    inj.set("crash:after=1")  # set() resets the count
    await inj.before_request()
    assert codes == [1]
