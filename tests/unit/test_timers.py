"""frontend.timers: many deadlines on one loop timer, in due order (ties first in, first out);
cancelled entries never run and release what they held; a failing callback is reported and the
others still run; the heap sheds cancelled entries."""
from __future__ import annotations

import asyncio

from frontend import clock
from frontend.timers import COMPACT_AT, TimerWheel


async def test_entries_run_in_due_order_and_cancelled_ones_never() -> None:
    wheel, ran = TimerWheel(), []
    now = clock.now()
    for name, delay in (("c", 0.030), ("a", 0.010), ("b", 0.020), ("b2", 0.020)):
        wheel.call_at(now + delay, ran.append, name)
    gone = wheel.call_at(now + 0.015, ran.append, "cancelled")
    big = bytearray(10)
    held = wheel.call_at(now + 0.025, ran.append, big)
    gone.cancel()
    held.cancel()
    assert held.args == () and len(wheel) == 4  # what it held is released at once
    await asyncio.sleep(0.06)
    assert ran == ["a", "b", "b2", "c"] and len(wheel) == 0


async def test_an_earlier_entry_rearms_the_loop_timer_and_entries_may_add_entries() -> None:
    wheel, ran = TimerWheel(), []
    wheel.call_later(5.0, ran.append, "late")
    wheel.call_later(0.01, lambda: wheel.call_later(0.01, ran.append, "chained"))
    await asyncio.sleep(0.08)
    assert ran == ["chained"]
    wheel.close()


async def test_an_entry_added_by_a_callback_does_not_delay_an_earlier_one() -> None:
    wheel, ran = TimerWheel(), []
    now = clock.now()
    wheel.call_at(now + 0.03, lambda: ran.append(("a", clock.now() - now)))
    wheel.call_at(now + 0.01, lambda: wheel.call_at(now + 0.5, ran.append, "b"))  # armed for +0.5 s in passing
    await asyncio.sleep(0.1)
    assert [name for name, _ in ran] == ["a"] and ran[0][1] < 0.09, ran  # fired near +30 ms, not at +500 ms
    wheel.close()


async def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    wheel, ran = TimerWheel(), []
    now = clock.now()
    wheel.call_at(now + 0.01, lambda: 1 / 0)
    wheel.call_at(now + 0.01, ran.append, "after")
    await asyncio.sleep(0.05)
    loop.set_exception_handler(None)
    assert ran == ["after"] and isinstance(reported[0]["exception"], ZeroDivisionError)


async def test_cancelled_entries_are_shed_from_the_heap() -> None:
    wheel = TimerWheel()
    entries = [wheel.call_later(60.0, print) for _ in range(COMPACT_AT * 2)]
    for e in entries[1:]:
        e.cancel()
    wheel.call_later(0.0, print)  # a firing rebuilds the heap once most of it is cancelled
    await asyncio.sleep(0.01)
    assert len(wheel._heap) == 1 and wheel.dead == 0
    wheel.close()
