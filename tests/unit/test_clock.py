"""frontend.clock: microsecond times on every real loop (uvloop's own clock reads whole
milliseconds), the simulated time on a virtual loop, and timer slack to match each loop's timers."""
from __future__ import annotations

import asyncio
import time

import uvloop

from frontend import clock
from harness.virtual_loop import VirtualTimeLoop


async def _spread_of_reads() -> tuple[float, float]:
    """(clock.now() difference, loop.time() difference) across a 200-us busy wait, same iteration."""
    loop = asyncio.get_running_loop()
    a, la = clock.now(), loop.time()
    end = time.monotonic() + 200e-6
    while time.monotonic() < end:
        pass
    return clock.now() - a, loop.time() - la


def test_uvloop_times_are_precise_though_its_own_clock_is_not() -> None:
    spread, _ = uvloop.run(_spread_of_reads())
    assert spread >= 150e-6, spread  # the busy wait shows, though no loop iteration passed
    own = uvloop.run(_loop_time())
    assert abs(own * 1000 - round(own * 1000)) < 1e-6, own  # whole milliseconds: the reason for clock.now
    assert uvloop.run(_slack()) == clock.MS_TIMER_SLACK_S


def test_asyncio_and_virtual_loops_keep_their_own_clock() -> None:
    assert asyncio.run(_spread_of_reads())[0] >= 150e-6
    assert asyncio.run(_slack()) == clock.EXACT_TIMER_SLACK_S
    loop = VirtualTimeLoop()
    try:
        loop.advance(12.5)
        assert loop.run_until_complete(_now()) == 12.5  # simulated seconds, not the wall's
    finally:
        loop.close()


async def _loop_time() -> float:
    return asyncio.get_running_loop().time()


async def _slack() -> float:
    return clock.timer_slack()


async def _now() -> float:
    return clock.now()
