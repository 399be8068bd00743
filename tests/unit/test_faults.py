"""Fault injection: spec parsing, the pure per-request decision, and the async hook."""
from __future__ import annotations

import asyncio
import random

import pytest

from workers.faults import (Action, Fault, FaultInjector, InjectedDrop, InjectedError, decide, parse,
                            sample_delay_ms)


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


async def test_long_delay_released_on_set() -> None:
    inj = FaultInjector("delay:ms=60000")
    waiter = asyncio.create_task(inj.before_request())
    await asyncio.sleep(0.01)
    inj.set("none")
    await asyncio.wait_for(waiter, timeout=1)


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
