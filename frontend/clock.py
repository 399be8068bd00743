"""The serving path's one clock. Every send time, round trip, due time and timer of the frontend
reads it, so ``parm simulate`` runs the same code on a loop whose clock is simulated
(harness.virtual_loop). CPU-cost counters (encode/decode seconds) keep perf_counter.
"""
from __future__ import annotations

import asyncio
import time

try:  # uvloop's loop.time() is libuv's millisecond clock, cached once per loop iteration
    from uvloop import Loop as _MillisecondLoop
except ImportError:  # pragma: no cover - uvloop is a core dependency, but the frontend runs without it
    _MillisecondLoop = ()  # type: ignore[assignment,misc]

EXACT_TIMER_SLACK_S = 1e-4  # asyncio's timers fire on time, up to scheduling noise
# uvloop's fire on its millisecond clock, which never runs ahead of time.monotonic: up to ~0.5 ms
# before a precise due time (0.3 ms measured). Keep this >= 0.5 ms, or a re-armed timer could spin.
MS_TIMER_SLACK_S = 1e-3


def now() -> float:
    """Seconds on the running loop's clock; on uvloop, time.monotonic (the same CLOCK_MONOTONIC
    base, but to the microsecond: uvloop's own reads in whole milliseconds, so a 0.4-ms round trip
    would be recorded as 0 or 1 ms, and every latency histogram would be quantised)."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, _MillisecondLoop):
        return time.monotonic()
    return loop.time()


def timer_slack() -> float:
    """How early a timer set for a ``now()`` time may fire: a due time this close counts as reached
    (otherwise a re-armed timer would spin until the precise time passes)."""
    return MS_TIMER_SLACK_S if isinstance(asyncio.get_running_loop(), _MillisecondLoop) else EXACT_TIMER_SLACK_S
